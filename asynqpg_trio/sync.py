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

from ._core._enqueue import check_default_max_retry, has_delay, plan_batch, with_trace
from ._core._inserted import ENQUEUE_ATTEMPTS, holders
from ._core._task import Task
from ._pg._sync_repo import find_holder, insert_batch
from ._telemetry._telemetry import shared_telemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["enqueue", "enqueue_many"]


def enqueue_many(
    conn: psycopg.Connection[Any],
    tasks: Sequence[Task],
    *,
    default_max_retry: int = 3,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> list[int | None]:
    """Insert a batch in one statement; one entry per input: the new id, or None for a
    skipped duplicate (of a held idempotency token or unique key, or of an earlier task of the
    batch).  Raises `InvalidTask` (nothing written) for a bad task, `SchemaMissing` for a
    database without the asynqpg schema.

    ``meter_provider`` and ``tracer_provider`` default to the global OpenTelemetry ones."""
    check_default_max_retry(default_max_retry)
    tasks = list(tasks)
    if not tasks:
        return []
    plan = plan_batch(tasks, default_max_retry)
    telemetry = shared_telemetry(meter_provider, tracer_provider)
    with telemetry.enqueue(plan.types, single=False, has_delay=False) as op:
        plan = with_trace(plan, op.trace)
        inserted = insert_batch(conn, plan)
        op.inserted(inserted.counts, None)
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
        DuplicateTask: a task of the same type holds the idempotency token, or the unique
            key in one of its unique states; its id is ``existing_id``.
    """
    check_default_max_retry(default_max_retry)
    plan = plan_batch([task], default_max_retry)
    telemetry = shared_telemetry(meter_provider, tracer_provider)
    with telemetry.enqueue(plan.types, single=True, has_delay=has_delay(plan)) as op:
        plan = with_trace(plan, op.trace)
        for _ in range(ENQUEUE_ATTEMPTS):
            inserted = insert_batch(conn, plan)
            (task_id,) = inserted.ids
            if task_id is not None:
                op.inserted(inserted.counts, task_id)
                return task_id
            for holder in holders(plan, inserted, 0):
                existing = find_holder(conn, holder)
                if existing is not None:
                    raise holder.duplicate(existing)
            # The holder left between the two statements: insert again.
        raise RuntimeError("enqueue kept racing with the holders of its token or key")
