"""The synchronous producer's statements (`asynqpg_trio.sync`), on a plain psycopg connection.

The same statements as the async producer's (``_pg/sql/tasks.sql``, through `_tasks_repo`),
run on the caller's ``psycopg.Connection`` and inside its open transaction if it has one.
The insert uses a server-binding cursor of its own whatever the connection's
``cursor_factory``: Django's connection makes client-side cursors, which cannot fetch the
insert's binary results.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .._core._enqueue import BatchPlan
from .._core._inserted import Holder, Inserted, read_result
from ._migrate import schema_required
from ._tasks_repo import enqueue_statement, holder_query

__all__ = ["find_holder", "insert_batch"]


def insert_batch(conn: psycopg.Connection[Any], plan: BatchPlan) -> Inserted:
    """Run the batch insert; return the new ids, one entry per input.

    Raises:
        SchemaMissing: the database has no asynqpg schema.
    """
    cur = psycopg.Cursor(conn)  # not conn.cursor(): see the module docstring
    with schema_required():
        cur.execute(enqueue_statement(plan), plan.params, binary=True)
    return read_result(plan, cur.fetchall())


def find_holder(conn: psycopg.Connection[Any], holder: Holder) -> int | None:
    """The id of the task holding a skipped task's token or unique slot, if any (still)."""
    query, params = holder_query(holder)
    row = psycopg.Cursor(conn).execute(query, params, binary=True).fetchone()
    return None if row is None else int(row[0])
