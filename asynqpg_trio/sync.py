"""Enqueue from plain synchronous code (Django, Flask, scripts) with a psycopg connection.

These functions share the async producer's validation and SQL; they run on the caller's sync
``psycopg.Connection``, inside its open transaction if there is one::

    import psycopg
    from asynqpg_trio import Task
    from asynqpg_trio.sync import enqueue

    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        enqueue(conn, Task("email:send", b'{"order": 1}'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ._enqueue import check_default_max_retry, map_results, plan_batch
from ._errors import DuplicateTask
from ._migrate import schema_required
from ._repository import QUERIES
from ._task import Task

__all__ = ["enqueue", "enqueue_many"]


def enqueue_many(
    conn: psycopg.Connection[Any], tasks: Sequence[Task], *, default_max_retry: int = 3
) -> list[int | None]:
    """Insert a batch in one statement; one entry per input: the new id, or None for a
    skipped duplicate.  Raises `InvalidTask` (nothing written) for a bad task, `SchemaMissing`
    for a database without the asynqpg schema."""
    check_default_max_retry(default_max_retry)
    tasks = list(tasks)
    if not tasks:
        return []
    plan = plan_batch(tasks, default_max_retry)
    cur = conn.cursor(binary=True)
    with schema_required():
        cur.execute(QUERIES.enqueue_many, plan.params)
    return map_results(plan, cur.fetchall())


def enqueue(conn: psycopg.Connection[Any], task: Task, *, default_max_retry: int = 3) -> int:
    """Insert one task and return its id.

    Raises:
        InvalidTask: the task failed validation; nothing was written.
        DuplicateTask: a task with the same type and idempotency token exists.
    """
    for _ in range(3):
        (task_id,) = enqueue_many(conn, [task], default_max_retry=default_max_retry)
        if task_id is not None:
            return task_id
        assert task.idempotency_token is not None
        cur = conn.execute(
            QUERIES.find_by_token,
            {"type": task.type, "token": task.idempotency_token},
        )
        row = cur.fetchone()
        if row is not None:
            raise DuplicateTask(task.type, task.idempotency_token, int(row[0]))
    raise RuntimeError("enqueue kept racing with concurrent deletes of the same token")
