"""Maintenance: leader election plus the leader-only janitor and cleaner, as one coroutine.

Theory of operation
-------------------
`run_maintenance` runs for as long as its caller (the consumer) lets it.  It campaigns for the
leadership of ``config.group`` (`_leader.Elector`) and, during each term of leadership, runs two
periodic loops in a task group inside the term's cancel scope:

* the janitor, every ``janitor_interval``: rescue running tasks whose lease expired;
* the cleaner, every ``cleaner_interval``: delete finalized tasks past their retention.

Both run once as soon as leadership is gained.  A loop logs a transient database error
(`psycopg.OperationalError`) and tries again at its next interval; any other error is a bug and
propagates.  When leadership is lost (a renewal fails or comes back not-ours, or the local lease
deadline passes), the term's scope is cancelled and both loops stop before the campaign does
anything else; all their writes are fenced on the leader row as well.

Cancellation: cancelling `run_maintenance` stops the loops, then resigns the leadership (and
NOTIFYs, so a follower takes over at once) within ``config.resign_grace`` seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import psycopg

from ._errors import ConfigurationError
from ._janitor import clean_finalized, rescue_expired
from ._leader import Elector, validate_client_id
from ._policies import DefaultRetryPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskStatus

    from ._pool import Pool
    from ._retry import RetryPolicy

__all__ = ["MaintenanceConfig", "MaintenanceStats", "run_maintenance"]

logger = logging.getLogger("asynqpg_trio.maintenance")

_DAY = 86400.0


def _seconds(name: str, value: float | timedelta, *, positive: bool = True) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"{name} must be seconds or a timedelta, got {value!r}")
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        need = "positive" if positive else "zero or more"
        raise ConfigurationError(f"{name} must be finite and {need}, got {value!r}")
    return seconds


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an integer of at least 1, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, init=False)
class MaintenanceConfig:
    """How the consumers of one queue elect a leader and how the leader maintains the table.

    Durations are given as seconds (int or float) or `datetime.timedelta` and stored as float
    seconds.  All arguments are keyword-only.

    Attributes:
        group: leadership group; consumers sharing a table and a group elect one leader.
        ttl: seconds a leadership lease lasts on the database clock (default 15).  A leader
            stops its maintenance ``0.8 * ttl`` after the last renewal it sent that
            succeeded, so it never overlaps a successor; a dead leader is replaced within
            about ``ttl + renew_interval``.
        renew_interval: seconds between elections / renewals (default 5; below ``ttl / 2``).
        janitor_interval: seconds between rescues of expired leases (default 5).
        janitor_batch: rows per rescue transaction (default 1000).
        cleaner_interval: seconds between cleanups (default 30).
        cleaner_batch: rows per cleanup statement (default 1000).
        max_batches_per_run: batches per rescue run, and per status per cleanup run, before
            waiting for the next interval (default 10).
        completed_retention: how long completed tasks are kept (default 24 hours).
        failed_retention: how long failed tasks are kept (default 7 days).
        cancelled_retention: how long cancelled tasks are kept (default 24 hours).
        resign_grace: the most seconds resigning may take at shutdown (default 5).

    Raises:
        ConfigurationError: a value is out of range (the message names it).
    """

    group: str
    ttl: float
    renew_interval: float
    janitor_interval: float
    janitor_batch: int
    cleaner_interval: float
    cleaner_batch: int
    max_batches_per_run: int
    completed_retention: float
    failed_retention: float
    cancelled_retention: float
    resign_grace: float

    def __init__(
        self,
        *,
        group: str = "default",
        ttl: float | timedelta = 15.0,
        renew_interval: float | timedelta = 5.0,
        janitor_interval: float | timedelta = 5.0,
        janitor_batch: int = 1000,
        cleaner_interval: float | timedelta = 30.0,
        cleaner_batch: int = 1000,
        max_batches_per_run: int = 10,
        completed_retention: float | timedelta = _DAY,
        failed_retention: float | timedelta = 7 * _DAY,
        cancelled_retention: float | timedelta = _DAY,
        resign_grace: float | timedelta = 5.0,
    ) -> None:
        if not isinstance(group, str) or not group:
            raise ConfigurationError(f"group must be a non-empty string, got {group!r}")
        ttl_s = _seconds("ttl", ttl)
        renew_s = _seconds("renew_interval", renew_interval)
        if not renew_s < ttl_s / 2:
            raise ConfigurationError(
                f"renew_interval ({renew_s:g} s) must be less than half the ttl ({ttl_s:g} s), "
                "so that one missed renewal does not cost the leadership"
            )
        values: dict[str, object] = {
            "group": group,
            "ttl": ttl_s,
            "renew_interval": renew_s,
            "janitor_interval": _seconds("janitor_interval", janitor_interval),
            "janitor_batch": _count("janitor_batch", janitor_batch),
            "cleaner_interval": _seconds("cleaner_interval", cleaner_interval),
            "cleaner_batch": _count("cleaner_batch", cleaner_batch),
            "max_batches_per_run": _count("max_batches_per_run", max_batches_per_run),
            "completed_retention": _seconds(
                "completed_retention", completed_retention, positive=False
            ),
            "failed_retention": _seconds("failed_retention", failed_retention, positive=False),
            "cancelled_retention": _seconds(
                "cancelled_retention", cancelled_retention, positive=False
            ),
            "resign_grace": _seconds("resign_grace", resign_grace),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclass(slots=True)
class MaintenanceStats:
    """Live counters of one `run_maintenance`, updated in place (read them, don't write).

    Attributes:
        is_leader: whether this instance's maintenance is running now.
        elections_won: times this instance became the leader.
        leadership_lost: terms that ended other than by shutdown (renewal failed or came
            back not-ours, or the local lease deadline passed).
        errors: transient database errors logged (elections, LISTEN, janitor, cleaner).
        janitor_runs: rescue runs completed.
        rescued: tasks put back to pending by the janitor.
        rescue_failed: tasks failed by the janitor because no attempt was left.
        cleaner_runs: cleanup runs completed.
        cleaned: finalized tasks deleted by the cleaner.
    """

    is_leader: bool = False
    elections_won: int = 0
    leadership_lost: int = 0
    errors: int = 0
    janitor_runs: int = 0
    rescued: int = 0
    rescue_failed: int = 0
    cleaner_runs: int = 0
    cleaned: int = 0


async def run_maintenance(
    pool: Pool,
    *,
    client_id: str,
    config: MaintenanceConfig,
    retry_policy: RetryPolicy | None = None,
    stats: MaintenanceStats | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Take part in leader election and, while leader, rescue expired leases and clean up.

    Supports ``await task_group.start(run_maintenance, ...)``: started once the first
    election has been tried (the LISTEN connection for resignations is set up by then).

    Args:
        pool: connection pool on the queue's database.  Up to three connections are checked
            out at once (election, janitor, cleaner); one more, for LISTEN, is opened with
            `Pool.connect` and closed on exit.
        client_id: this instance's id, unique in the group (non-empty, < 128 characters);
            also the name the janitor signs rescue messages with.
        config: the election and maintenance settings.
        retry_policy: gives the back-off of rescued tasks (``next_retry(attempt)``); pass the
            consumer's; default `DefaultRetryPolicy`.
        stats: counters to update; pass one to observe this instance.
        task_status: for `TaskGroup.start`.

    Raises:
        ConfigurationError: ``client_id`` is not valid (before any database work).

    Cancellation: runs until cancelled.  Maintenance stops first, then the leadership is
    resigned and announced within ``config.resign_grace`` seconds (shielded); the database
    holds no lock or lease of this instance afterwards unless resigning failed, in which
    case its lease expires within ``config.ttl`` seconds.
    """
    me = validate_client_id(client_id)
    policy: RetryPolicy = retry_policy if retry_policy is not None else DefaultRetryPolicy()
    counters = stats if stats is not None else MaintenanceStats()
    retentions = {
        "completed": config.completed_retention,
        "failed": config.failed_retention,
        "cancelled": config.cancelled_retention,
    }

    async def rescue() -> None:
        result = await rescue_expired(
            pool,
            group=config.group,
            me=me,
            policy=policy,
            batch_size=config.janitor_batch,
            max_batches=config.max_batches_per_run,
            idle_timeout=config.ttl / 2,
        )
        counters.janitor_runs += 1
        counters.rescued += result.rescued
        counters.rescue_failed += result.failed
        if result.rescued or result.failed:
            logger.info(
                "janitor %s: %d expired leases rescued, %d tasks failed (no attempt left)",
                me,
                result.rescued,
                result.failed,
            )

    async def clean() -> None:
        deleted = await clean_finalized(
            pool,
            group=config.group,
            me=me,
            retentions=retentions,
            batch_size=config.cleaner_batch,
            max_batches=config.max_batches_per_run,
        )
        counters.cleaner_runs += 1
        counters.cleaned += deleted
        if deleted:
            logger.info("cleaner %s: %d finalized tasks deleted", me, deleted)

    async def while_leader() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_every, "janitor", config.janitor_interval, rescue, counters)
            tg.start_soon(_every, "cleaner", config.cleaner_interval, clean, counters)

    elector = Elector(
        pool,
        group=config.group,
        me=me,
        ttl=config.ttl,
        renew_interval=config.renew_interval,
        resign_grace=config.resign_grace,
        counters=counters,
    )
    await elector.run(while_leader, task_status=task_status)


async def _every(
    name: str, interval: float, action: Callable[[], Awaitable[None]], counters: MaintenanceStats
) -> None:
    """Run ``action`` now and then every ``interval`` seconds, surviving transient errors."""
    while True:
        try:
            await action()
        except psycopg.OperationalError as ex:
            counters.errors += 1
            logger.warning("%s run failed (%s); next try in %.1f s", name, ex, interval)
        await anyio.sleep(interval)
