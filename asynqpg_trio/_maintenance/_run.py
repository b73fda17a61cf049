"""Maintenance: leader election plus the leader-only janitor and cleaner, as one coroutine.

Theory of operation
-------------------
`run_maintenance` runs for as long as its caller (the consumer) lets it.  It campaigns for the
leadership of ``config.group`` (`_elector.Elector`) and, during each term of leadership, runs two
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
from typing import TYPE_CHECKING

import anyio
import psycopg

from .._core._policies import DefaultRetryPolicy
from ._config import MaintenanceStats
from ._elector import Elector, validate_client_id
from ._janitor import clean_finalized, rescue_expired

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskStatus

    from .._core._retry import RetryPolicy
    from .._core._rows import MaintenanceRepository
    from ._config import MaintenanceConfig

__all__ = ["run_maintenance"]

logger = logging.getLogger("asynqpg_trio.maintenance")


async def run_maintenance(
    repo: MaintenanceRepository,
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
        repo: where the election, rescue and clean statements run: ``PgMaintenance(pool)``
            on the queue's database (up to three of the pool's connections are checked out at
            once, for the election, the janitor and the cleaner; one more, for LISTEN, is
            opened with `Pool.connect` and closed on exit), or a `FakeDatabase` in tests.
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
            repo,
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
            repo,
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
        repo,
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
