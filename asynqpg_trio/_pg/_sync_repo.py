"""The synchronous producer's statements (`asynqpg_trio.sync`), on a plain psycopg connection.

The same statements as the async producer's (``_pg/sql/tasks.sql``, through `_tasks_repo`),
run on the caller's ``psycopg.Connection`` and inside its open transaction if it has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._enqueue import BatchPlan
from .._core._inserted import Holder, Inserted, read_result
from ._migrate import schema_required
from ._tasks_repo import enqueue_statement, holder_query

if TYPE_CHECKING:
    import psycopg

__all__ = ["find_holder", "insert_batch"]


def insert_batch(conn: psycopg.Connection[Any], plan: BatchPlan) -> Inserted:
    """Run the batch insert; return the new ids, one entry per input.

    Raises:
        SchemaMissing: the database has no asynqpg schema.
    """
    cur = conn.cursor(binary=True)
    with schema_required():
        cur.execute(enqueue_statement(plan), plan.params)
    return read_result(plan, cur.fetchall())


def find_holder(conn: psycopg.Connection[Any], holder: Holder) -> int | None:
    """The id of the task holding a skipped task's token or unique slot, if any (still)."""
    query, params = holder_query(holder)
    row = conn.cursor(binary=True).execute(query, params).fetchone()
    return None if row is None else int(row[0])
