"""The schedules repository: the scheduler's reads and writes of ``asynqpg_schedules``.

Theory of operation
-------------------
Every query lives in ``_pg/sql/schedules.sql``; this module binds parameters and turns rows into
frozen values (`_core._schedule_rows`).  A fire's tasks go through the producer's path: the
batch is planned and validated by `_core._enqueue.plan_batch` and inserted by
`_tasks_repo.insert_batch` (``ON CONFLICT DO NOTHING`` on the unique (type, idempotency token)
index: a fire another consumer enqueued first is skipped), then the schedule's row is written,
both in one transaction, so the stored last fire never names a fire whose task was not
committed.  `PgSchedules` is the `SchedulesRepository` the scheduler uses, each method on a
pooled connection of its own.

Cancellation: every method is a checkpoint; a cancelled `fire` rolls back (neither the tasks
nor the row are written).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core._enqueue import plan_batch, with_trace
from .._core._schedule_rows import DEFAULT_MAX_RETRY, FireRecord, ScheduleRow, ScheduleState
from ._migrate import schema_required
from ._sql import load
from ._tasks_repo import insert_batch

if TYPE_CHECKING:
    from .._core._task import Task
    from ._conn import Connection
    from ._pool import Pool

__all__ = [
    "QUERIES",
    "PgSchedules",
    "ScheduleQueries",
    "fire",
    "list_schedules",
    "read_state",
]


@dataclass(frozen=True, slots=True)
class ScheduleQueries:
    """The statements of ``_pg/sql/schedules.sql``, one attribute per named block."""

    schedule_state: str
    record_schedule: str
    list_schedules: str


#: The loaded schedule statements.
QUERIES: ScheduleQueries = load(ScheduleQueries, "schedules.sql")


async def read_state(conn: Connection[Any], names: Sequence[str]) -> ScheduleState:
    """The database clock and the last fire of each named schedule that has one."""
    with schema_required():
        cur = await conn.execute(QUERIES.schedule_state, {"names": list(names)})
    rows = await cur.fetchall()
    last = {str(name): at for _, name, at in rows if name is not None and at is not None}
    return ScheduleState(now=rows[0][0], last_fires=last)


async def fire(
    conn: Connection[Any], record: FireRecord, tasks: Sequence[Task], *, trace: str | None
) -> list[int | None]:
    """Insert ``tasks`` and write ``record`` in one transaction; return one entry per task
    (None: a duplicate of a fire already enqueued).

    Raises:
        InvalidTask: a task failed validation (nothing was written).
    """
    ids: list[int | None] = []
    plan = with_trace(plan_batch(tasks, DEFAULT_MAX_RETRY), trace) if tasks else None
    async with conn.transaction():
        if plan is not None:
            ids = (await insert_batch(conn, plan)).ids
        with schema_required():
            await conn.execute(
                QUERIES.record_schedule,
                {
                    "name": record.name,
                    "type": record.type,
                    "spec": record.spec,
                    "timezone": record.timezone,
                    "catch_up": record.catch_up,
                    "last_fire": record.last_fire,
                    "next_fire": record.next_fire,
                },
            )
    return ids


async def list_schedules(conn: Connection[Any]) -> list[ScheduleRow]:
    """Every schedule row, by name."""
    with schema_required():
        cur = await conn.execute(QUERIES.list_schedules)
    return [ScheduleRow(*values) for values in await cur.fetchall()]


@dataclass(frozen=True, slots=True, eq=False)
class PgSchedules:
    """The scheduler's `SchedulesRepository` on a pool: each method checks out a connection
    of its own."""

    pool: Pool

    async def state(self, names: Sequence[str]) -> ScheduleState:
        """`read_state` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await read_state(conn, names)

    async def fire(
        self, record: FireRecord, tasks: Sequence[Task], *, trace: str | None
    ) -> list[int | None]:
        """`fire` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await fire(conn, record, tasks, trace=trace)
