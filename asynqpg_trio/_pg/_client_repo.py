"""The client's SQL, loaded once, and one function per statement.

Theory of operation
-------------------
Every query lives in ``_pg/sql/client.sql``; this module binds parameters and turns rows into
frozen values.  Each function takes the connection to run on, so the client decides between
its pool and the caller's transaction.  The only SQL composed at run time is the list query's
ORDER BY and keyset clauses, and they are picked from `_ORDER_CLAUSES` / `_AFTER_CLAUSES`,
fixed fragments keyed by a whitelisted sort field: no caller text ever reaches the SQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from .._core._errors import DuplicateTask
from .._core._inserted import ENQUEUE_ATTEMPTS
from .._core._listing import ORDER_FIELDS
from .._core._records import TASK_COLUMNS, QueueStats, TaskRecord, TaskSummary, ThroughputMinute
from .._core._results import StoredOutcome
from .._core._row import TaskStatus
from .._core._state import Event
from ._sql import SCHEMA, load

if TYPE_CHECKING:
    from .._core._listing import ListPlan

__all__ = [
    "BATCH_SIZE",
    "QUERIES",
    "UNIQUE_INDEX",
    "ClientQueries",
    "Outcome",
    "PayloadRead",
    "delete_by_type_prefix",
    "delete_failed_batch",
    "listen_done",
    "get_result",
    "task_outcomes",
    "watch_tasks",
    "get_payload",
    "get_task",
    "get_task_summary",
    "list_tasks",
    "ping",
    "retry_failed_batch",
    "stats",
    "status_counts_by_type_prefix",
    "throughput",
    "write_task",
]

#: Rows a bulk retry or delete touches per statement.
BATCH_SIZE = 1000
#: The index of unique slots (migration 0004): a move into a held slot fails on it.
UNIQUE_INDEX: Final = "asynqpg_tasks_unique_idx"


@dataclass(frozen=True, slots=True)
class ClientQueries:
    """The statements of ``_pg/sql/client.sql``, one attribute per named block."""

    get_task: str
    get_task_summary: str
    get_payload: str
    list_tasks: str
    cancel_task: str
    retry_task: str
    delete_task: str
    retry_failed_batch: str
    delete_failed_batch: str
    stats: str
    throughput: str
    status_counts_by_type_prefix: str
    delete_by_type_prefix: str
    unique_holder: str
    watch_task: str
    task_outcomes: str
    get_result: str
    listen_done: str


#: The loaded client statements.
QUERIES: ClientQueries = load(ClientQueries, "client.sql")


def _order(column: str, descending: bool) -> sql.Composed:
    direction = sql.SQL("DESC" if descending else "ASC")
    if column == "id":
        return sql.SQL("m.id {}").format(direction)
    return sql.SQL("{} {}, m.id {}").format(sql.Identifier("m", column), direction, direction)


def _after(column: str, descending: bool) -> sql.Composed:
    op = sql.SQL("<" if descending else ">")
    if column == "id":
        return sql.SQL("m.id {} %(after_id)s::bigint").format(op)
    return sql.SQL("({}, m.id) {} (%(after_value)s::timestamptz, %(after_id)s::bigint)").format(
        sql.Identifier("m", column), op
    )


_ORDER_CLAUSES: Final = {(f, d): _order(f, d) for f in ORDER_FIELDS for d in (False, True)}
_AFTER_CLAUSES: Final = {(f, d): _after(f, d) for f in ORDER_FIELDS for d in (False, True)}
#: The statement of each single-task write.
_WRITES: Final = {
    Event.CANCEL: QUERIES.cancel_task,
    Event.MANUAL_RETRY: QUERIES.retry_task,
    Event.DELETE: QUERIES.delete_task,
}
_LIST_TEMPLATE: Final = sql.SQL(QUERIES.list_tasks)  # type: ignore[arg-type,unused-ignore]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a single-task write found and did.

    Attributes:
        old_status: the task's status when the statement locked it.
        changed: whether the statement changed (or deleted) the row.
        task: the row after the change when changed (before it, for delete), else as it is.
    """

    old_status: TaskStatus
    changed: bool
    task: TaskRecord


async def get_task(conn: psycopg.AsyncConnection[Any], task_id: int) -> TaskRecord | None:
    """The task with this id, or None."""
    cur = conn.cursor(binary=True)
    await cur.execute(QUERIES.get_task, {"id": task_id})
    row = await cur.fetchone()
    return None if row is None else TaskRecord.from_row(row)


async def get_task_summary(conn: psycopg.AsyncConnection[Any], task_id: int) -> TaskSummary | None:
    """The task with this id without its payload, or None."""
    cur = conn.cursor(binary=True)
    await cur.execute(QUERIES.get_task_summary, {"id": task_id})
    row = await cur.fetchone()
    return None if row is None else TaskSummary.from_row(row)


@dataclass(frozen=True, slots=True)
class PayloadRead:
    """What `get_payload` found: the payload's size, and the payload if it was within the
    limit (else None: it was not read)."""

    size: int
    payload: bytes | None


async def get_payload(
    conn: psycopg.AsyncConnection[Any], task_id: int, max_bytes: int | None
) -> PayloadRead | None:
    """The payload's size, and the payload when it is at most ``max_bytes``; None: no task."""
    cur = conn.cursor(binary=True)
    await cur.execute(QUERIES.get_payload, {"id": task_id, "max_bytes": max_bytes})
    row = await cur.fetchone()
    if row is None:
        return None
    size, payload = row
    return PayloadRead(int(size), None if payload is None else bytes(payload))


async def list_tasks(
    conn: psycopg.AsyncConnection[Any], plan: ListPlan
) -> tuple[int, list[TaskSummary]]:
    """Run a planned list query; return (total matching, the page's summaries)."""
    key = (plan.order_by, plan.descending)
    query = _LIST_TEMPLATE.format(
        after_clause=_AFTER_CLAUSES[key] if plan.keyset else sql.SQL("TRUE"),
        order_clause=_ORDER_CLAUSES[key],
    )
    cur = conn.cursor(binary=True)
    await cur.execute(query, plan.params)
    rows = await cur.fetchall()
    total = int(rows[0][0]) if rows else 0
    return total, [TaskSummary.from_row(r[1:]) for r in rows if r[1] is not None]


@asynccontextmanager
async def _undoable(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Around a statement that may fail on the unique index: a savepoint (or a transaction of
    its own) so that the failure leaves the caller's transaction usable; in autocommit
    outside a transaction, nothing (the failed statement undoes itself)."""
    if conn.autocommit and conn.info.transaction_status is TransactionStatus.IDLE:
        yield
    else:
        async with conn.transaction():
            yield


async def write_task(
    conn: psycopg.AsyncConnection[Any], event: Event, task_id: int
) -> Outcome | None:
    """Apply a client event (cancel, manual_retry or delete) to one task; None when there is
    no such task.

    Raises:
        DuplicateTask: the move would put a unique task back into its unique states while
            another task holds its slot (the row is left as it was).
    """
    if event is Event.DELETE:  # leaves every slot as it was
        return await _write_task(conn, event, task_id)
    for _ in range(ENQUEUE_ATTEMPTS):
        try:
            async with _undoable(conn):
                return await _write_task(conn, event, task_id)
        except psycopg.errors.UniqueViolation as ex:
            if ex.diag.constraint_name != UNIQUE_INDEX:
                raise
        cur = await conn.cursor(binary=True).execute(QUERIES.unique_holder, {"id": task_id})
        holder = await cur.fetchone()
        if holder is not None:
            holder_id, task_type, key = holder
            raise DuplicateTask(task_type, None, holder_id, unique_key=key)
        # The holder left its unique states in between: try again.
    raise RuntimeError(f"task {task_id} kept racing with the holders of its unique key")


async def _write_task(
    conn: psycopg.AsyncConnection[Any], event: Event, task_id: int
) -> Outcome | None:
    cur = conn.cursor(binary=True)
    await cur.execute(_WRITES[event], {"id": task_id})
    row = await cur.fetchone()
    if row is None:
        return None
    old_status, changed, _notified, *task = row
    assert len(task) == TASK_COLUMNS
    return Outcome(TaskStatus(old_status), bool(changed), TaskRecord.from_row(task))


async def retry_failed_batch(
    conn: psycopg.AsyncConnection[Any], task_type: str | None, batch_size: int = BATCH_SIZE
) -> int:
    """Re-queue up to ``batch_size`` failed tasks; return how many.

    The statement leaves failed a unique task whose slot another task holds; one that races
    with a producer taking its slot fails the statement, which then runs again.
    """
    params = {"type": task_type, "batch_size": batch_size}
    for _ in range(ENQUEUE_ATTEMPTS):
        try:
            async with _undoable(conn):
                cur = await conn.execute(QUERIES.retry_failed_batch, params)
                row = await cur.fetchone()
        except psycopg.errors.UniqueViolation as ex:
            if ex.diag.constraint_name != UNIQUE_INDEX:
                raise
            continue
        assert row is not None
        return int(row[0])
    raise RuntimeError("retrying failed tasks kept racing with producers of unique tasks")


async def delete_failed_batch(
    conn: psycopg.AsyncConnection[Any], task_type: str | None, batch_size: int = BATCH_SIZE
) -> int:
    """Delete up to ``batch_size`` failed tasks; return how many."""
    cur = await conn.execute(
        QUERIES.delete_failed_batch, {"type": task_type, "batch_size": batch_size}
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def stats(conn: psycopg.AsyncConnection[Any]) -> QueueStats:
    """Counts by status and by type, from one scan."""
    cur = await conn.execute(QUERIES.stats)
    return QueueStats.from_counts(await cur.fetchall())


async def throughput(conn: psycopg.AsyncConnection[Any], minutes: int) -> list[ThroughputMinute]:
    """Completed and failed counts for each of the last ``minutes`` minutes, oldest first."""
    cur = await conn.execute(QUERIES.throughput, {"minutes": minutes})
    return [
        ThroughputMinute(minute, int(done), int(failed))
        for minute, done, failed in await cur.fetchall()
    ]


async def ping(conn: psycopg.AsyncConnection[Any]) -> None:
    """One round trip to the database (a health check); raises if it is unreachable."""
    await conn.execute(SCHEMA.ping)


async def status_counts_by_type_prefix(
    conn: psycopg.AsyncConnection[Any], prefix: str
) -> dict[str, int]:
    """Task counts by status, over the types that start with ``prefix`` (statuses with no
    task are absent)."""
    cur = await conn.execute(QUERIES.status_counts_by_type_prefix, {"prefix": prefix})
    return {str(status): int(n) for status, n in await cur.fetchall()}


async def delete_by_type_prefix(conn: psycopg.AsyncConnection[Any], prefix: str) -> int:
    """Delete the tasks that are not running, of the types that start with ``prefix``;
    return how many."""
    cur = await conn.execute(QUERIES.delete_by_type_prefix, {"prefix": prefix})
    return cur.rowcount


async def watch_tasks(conn: psycopg.AsyncConnection[Any], ids: Sequence[int]) -> None:
    """Mark the pending or running tasks of ``ids`` as waited for (their finish then
    NOTIFYs ``asynqpg_done``); finished or missing tasks are left alone."""
    await conn.execute(QUERIES.watch_task, {"ids": list(ids)})


async def task_outcomes(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[int]
) -> list[StoredOutcome]:
    """Of these tasks, the finished ones and the missing ones (status None)."""
    cur = await conn.execute(QUERIES.task_outcomes, {"ids": list(ids)})
    return [StoredOutcome(int(i), s, r, c, m) for i, s, r, c, m in await cur.fetchall()]


async def get_result(conn: psycopg.AsyncConnection[Any], task_id: int) -> StoredOutcome | None:
    """One task's status, stored result and last message (None: no such task)."""
    cur = await conn.execute(QUERIES.get_result, {"id": task_id})
    row = await cur.fetchone()
    return None if row is None else StoredOutcome(task_id, *row)


async def listen_done(conn: psycopg.AsyncConnection[Any]) -> None:
    """LISTEN on ``asynqpg_done`` on ``conn`` (a dedicated connection, for as long as it is
    open)."""
    await conn.execute(QUERIES.listen_done)
