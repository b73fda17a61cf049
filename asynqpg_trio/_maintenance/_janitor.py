"""The janitor: rescues tasks whose consumer stopped renewing, and cleans old finished tasks.

Theory of operation
-------------------
Both jobs run only on the leader (`_maintenance` calls them once per interval while this
instance holds the lease) and every write is fenced in SQL on the leader row, so a janitor
that lost the leadership without knowing it changes nothing.  They run no SQL themselves: the
statements are the maintenance repository's (a `MaintenanceRepository`: `PgMaintenance` on
PostgreSQL, `FakeDatabase` in the unit tests).

*Rescue* (design.md, event ``rescue``): a task is ``running`` with ``blocked_till`` not after now
when the consumer holding it stopped renewing its lease (crashed, hung, or partitioned away).
Each batch is one short transaction: lock up to ``batch_size`` such rows with ``SKIP LOCKED``,
plan in pure Python what becomes of each (`_rescue.plan_rescue`: back to ``pending`` after the retry
policy's back-off when an attempt is left, else ``failed``), and apply the plan with one
``UPDATE ... FROM unnest(...)`` fenced by the lease token that was read, so a task completed,
cancelled or taken over meanwhile is left alone.  The attempt counters do not change: our
claim already consumed the attempt (a row a Go consumer claimed, which has no lease token and
whose claim consumed none, is charged its dead attempt here).  A lease that a live consumer
keeps renewing never expires, so it is never touched.

*Clean* (event ``clean``): delete tasks finalized longer ago than their status's retention, one
bounded single-statement batch at a time, skipping locked rows.  Rows without a
``finalized_at`` are never deleted.

Both stop after ``max_batches`` batches per run, so a backlog is worked off over several runs
and no run holds locks or a connection for long.  Neither catches database errors: the caller
decides what is transient.

Cancellation: every await is a checkpoint; a cancelled batch rolls back (rescue) or is a
single statement that either happened or did not (clean).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from .._core._rescue import plan_rescue

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._core._retry import RetryPolicy
    from .._core._rows import MaintenanceRepository

__all__ = ["FINAL_STATUSES", "RescueResult", "clean_finalized", "rescue_expired"]

#: The statuses whose tasks the cleaner deletes once their retention has passed.
FINAL_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RescueResult:
    """What one rescue run did.

    Attributes:
        rescued: tasks put back to pending (a retry is due after the back-off).
        failed: tasks failed because no attempt was left.
    """

    rescued: int = 0
    failed: int = 0


async def rescue_expired(
    repo: MaintenanceRepository,
    *,
    group: str,
    me: str,
    policy: RetryPolicy,
    batch_size: int,
    max_batches: int,
    idle_timeout: float | None = None,
) -> RescueResult:
    """Rescue up to ``batch_size * max_batches`` running tasks whose lease has expired.

    Does nothing unless ``me`` holds an unexpired lease on ``group``.  With ``idle_timeout``
    the server ends a batch's transaction in which this client stalls for longer (see
    `_tasks_repo.bounded_transaction`), so a stalled leader neither keeps the rows it
    locked nor, through its share lock on the leader row, blocks the election of a successor.

    Raises:
        psycopg.Error: from the database; batches committed before it stay committed.

    Cancellation: a checkpoint; the batch in progress is rolled back.
    """
    decide = partial(plan_rescue, janitor=me, policy=policy)
    rescued = failed = 0
    for _ in range(max_batches):
        batch = await repo.rescue_batch(group, me, batch_size, decide, idle_timeout)
        rescued += batch.rescued
        failed += batch.failed
        if batch.locked < batch_size:
            break
    return RescueResult(rescued=rescued, failed=failed)


async def clean_finalized(
    repo: MaintenanceRepository,
    *,
    group: str,
    me: str,
    retentions: Mapping[str, float],
    batch_size: int,
    max_batches: int,
) -> int:
    """Delete finalized tasks older than their status's retention; return how many.

    Args:
        repo: where to run the statements.
        group: the leadership group fencing the deletes.
        me: this instance's client id; nothing is deleted unless it holds the lease.
        retentions: seconds to keep tasks, per final status (keys from `FINAL_STATUSES`).
        batch_size: the most rows one statement deletes.
        max_batches: the most statements per status in this run.

    Raises:
        ValueError: a key of ``retentions`` is not a final status.
        psycopg.Error: from the database; batches done before it stay done.

    Cancellation: a checkpoint; each batch is one statement, done or not.
    """
    unknown = set(retentions) - set(FINAL_STATUSES)
    if unknown:
        raise ValueError(f"not final statuses: {sorted(unknown)}")
    total = 0
    for status, retention in retentions.items():
        for _ in range(max_batches):
            deleted = await repo.clean_batch(group, me, status, float(retention), batch_size)
            total += deleted
            if deleted < batch_size:
                break
    return total
