"""Enqueue from plain synchronous code (Django, Flask, scripts) with a psycopg connection.

These functions share the async producer's validation, SQL and telemetry (spans, metrics and
the trace context stored on each task); they run on the caller's sync ``psycopg.Connection``,
inside its open transaction if there is one::

    import psycopg
    from asynqpg_trio import Task
    from asynqpg_trio.sync import enqueue

    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        enqueue(conn, Task("email:send", b'{"order": 1}'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from ._core._enqueue import (
    BatchPlan,
    Inserted,
    check_default_max_retry,
    has_delay,
    plan_batch,
    read_result,
    with_trace,
)
from ._core._errors import DuplicateTask
from ._core._task import Task
from ._pg._migrate import schema_required
from ._pg._tasks_repo import QUERIES, enqueue_statement
from ._telemetry._telemetry import shared_telemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["enqueue", "enqueue_many"]


def _insert(conn: psycopg.Connection[Any], plan: BatchPlan) -> Inserted:
    cur = conn.cursor(binary=True)
    with schema_required():
        cur.execute(enqueue_statement(plan), plan.params)
    return read_result(plan, cur.fetchall())


def enqueue_many(
    conn: psycopg.Connection[Any],
    tasks: Sequence[Task],
    *,
    default_max_retry: int = 3,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> list[int | None]:
    """Insert a batch in one statement; one entry per input: the new id, or None for a
    skipped duplicate.  Raises `InvalidTask` (nothing written) for a bad task, `SchemaMissing`
    for a database without the asynqpg schema.

    ``meter_provider`` and ``tracer_provider`` default to the global OpenTelemetry ones."""
    check_default_max_retry(default_max_retry)
    tasks = list(tasks)
    if not tasks:
        return []
    plan = plan_batch(tasks, default_max_retry)
    telemetry = shared_telemetry(meter_provider, tracer_provider)
    with telemetry.enqueue(plan.types, single=False, has_delay=False) as op:
        plan = with_trace(plan, op.trace)
        inserted = _insert(conn, plan)
        op.inserted(inserted.rows, None)
    return inserted.ids


def enqueue(
    conn: psycopg.Connection[Any],
    task: Task,
    *,
    default_max_retry: int = 3,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> int:
    """Insert one task and return its id.

    Raises:
        InvalidTask: the task failed validation; nothing was written.
        DuplicateTask: a task with the same type and idempotency token exists.
    """
    check_default_max_retry(default_max_retry)
    plan = plan_batch([task], default_max_retry)
    telemetry = shared_telemetry(meter_provider, tracer_provider)
    with telemetry.enqueue(plan.types, single=True, has_delay=has_delay(plan)) as op:
        plan = with_trace(plan, op.trace)
        for _ in range(3):
            inserted = _insert(conn, plan)
            (task_id,) = inserted.ids
            if task_id is not None:
                op.inserted(inserted.rows, task_id)
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
