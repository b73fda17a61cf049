"""The queue's SQL, loaded once, and the statements the producer and consumer run.

Every query lives in ``_sql/tasks.sql``; this module only binds parameters and turns rows into
values.  One method per query; each takes the connection to run on, so callers decide about
pools and transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._queries import load

if TYPE_CHECKING:
    import psycopg

__all__ = ["QUERIES", "TaskQueries"]


@dataclass(frozen=True, slots=True)
class TaskQueries:
    """The statements of ``_sql/tasks.sql``, one attribute per named block."""

    enqueue_many: str
    find_by_token: str
    claim: str
    complete_many: str
    fail_many: str
    retry_many: str
    snooze_many: str
    extend_leases: str
    lost_leases: str
    next_ready_at: str


#: The loaded task statements.
QUERIES: TaskQueries = load(TaskQueries, "tasks.sql")


async def insert_batch(
    conn: psycopg.AsyncConnection[Any], params: dict[str, list[Any]]
) -> list[tuple[Any, ...]]:
    """Run the batch insert; return (id, type, token) of the inserted rows in id order."""
    cur = conn.cursor(binary=True)
    await cur.execute(QUERIES.enqueue_many, params)
    return await cur.fetchall()


async def find_by_token(
    conn: psycopg.AsyncConnection[Any], task_type: str, token: str
) -> int | None:
    """The id of the task holding (type, token), if any."""
    cur = await conn.execute(QUERIES.find_by_token, {"type": task_type, "token": token})
    row = await cur.fetchone()
    return None if row is None else int(row[0])
