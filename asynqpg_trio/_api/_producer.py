"""The producer: put tasks on the queue, alone or inside the caller's transaction.

Theory of operation
-------------------
`Producer.enqueue_many` validates the whole batch first (nothing is written if one task is
bad), then runs ONE statement whatever the batch size: an ``INSERT ... SELECT FROM unnest(...)``
over parameter arrays, with ``ON CONFLICT DO NOTHING`` for idempotency tokens and unique
keys (`Unique`: the database's unique index decides, under any number of producers) and a single
``NOTIFY asynqpg_new`` that wakes idle consumers when something is ready now.  All times come
from the database clock.  With ``conn=`` the statement runs on the caller's connection and so
inside its open transaction: the tasks appear on commit and vanish on rollback (the NOTIFY too:
PostgreSQL delivers notifications at commit).

Telemetry: each call is one ``asynqpg.enqueue`` or ``asynqpg.enqueue_many`` producer span
(with ``conn=`` too), and stores that span's W3C trace context on its rows so the consumer's
processing joins the same trace.  ``asynqpg.tasks.enqueued`` counts rows actually inserted
(not skipped duplicates); a database failure counts every task of the call as a ``db_error``.
Invalid tasks are refused before any span or metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from .._core._enqueue import BatchPlan, check_default_max_retry, has_delay, plan_batch, with_trace
from .._core._inserted import ENQUEUE_ATTEMPTS, Holder, Inserted, holders
from .._pg import _tasks_repo as repo
from .._pg._pool import Pool
from .._telemetry._telemetry import Telemetry
from ._owner import PoolOwner
from ._waiters import wait_for_result

if TYPE_CHECKING:
    import psycopg
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .._core._task import Task

__all__ = ["Producer"]


@final
class Producer(PoolOwner):
    """Enqueues tasks.

    Args:
        pool_or_dsn: an `open_pool` pool, or a DSN (the producer then keeps a small pool of
            its own, closed by `aclose` or ``async with``).
        default_max_retry: total runs allowed for tasks that do not set ``max_retry``
            (0 to 32767; the Go library's default, 3).
        meter_provider: the OpenTelemetry meter provider (default: the global one).
        tracer_provider: the OpenTelemetry tracer provider (default: the global one).

    Raises:
        ConfigurationError: ``default_max_retry`` is out of range.
    """

    def __init__(
        self,
        pool_or_dsn: Pool | str,
        *,
        default_max_retry: int = 3,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._default_max_retry = check_default_max_retry(default_max_retry)
        self._telemetry = Telemetry(meter_provider, tracer_provider)
        super().__init__(pool_or_dsn)

    async def enqueue(self, task: Task, *, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        """Insert one task; return its id.

        Args:
            task: the task.
            conn: run on this connection (inside its open transaction, if any) instead of the
                pool.

        Raises:
            InvalidTask: the task failed validation; nothing was written.
            DuplicateTask: a task of the same type holds the idempotency token, or the unique
                key (`Unique`) in one of its unique states; its id is ``existing_id``.
                Inside a transaction, the transaction is not aborted.

        Cancellation: a checkpoint.  If cancelled, the task was inserted or not; with ``conn``
        inside a transaction, the caller's commit decides.
        """
        plan = plan_batch([task], self._default_max_retry)
        with self._telemetry.enqueue(plan.types, single=True, has_delay=has_delay(plan)) as op:
            plan = with_trace(plan, op.trace)
            for _ in range(ENQUEUE_ATTEMPTS):
                inserted = await self._insert(plan, conn)
                (task_id,) = inserted.ids
                if task_id is not None:
                    op.inserted(inserted.counts, task_id)
                    return task_id
                for holder in holders(plan, inserted, 0):
                    existing = await self._find(holder, conn)
                    if existing is not None:
                        raise holder.duplicate(existing)
                # The holder left (deleted, or out of its unique states) between the two
                # statements: insert again.
            raise RuntimeError("enqueue kept racing with the holders of its token or key")

    async def enqueue_and_wait(self, task: Task, *, cancel_on_cancel: bool = False) -> Any:
        """Enqueue one task and wait for it to finish: request/response over the queue.

        The same as `enqueue` then `Client.wait` on this producer's pool (whose one LISTEN
        connection serves every waiter).  No ``timeout=``: bound it with ``move_on_after`` /
        ``fail_after``.

        Args:
            task: the task.
            cancel_on_cancel: if the wait is cancelled, cancel the task too (see
                `Client.wait`).

        Returns:
            The task's result (what its handler returned; see `Client.get_result`).

        Raises:
            InvalidTask, DuplicateTask: as `enqueue` (nothing is waited for).
            TaskFailed: the task failed for good.
            TaskCancelled: the task was cancelled.

        Cancellation: a checkpoint.  Cancelled during the insert, the task was inserted or
        not; during the wait, it stays enqueued (cancelled too with ``cancel_on_cancel``).
        """
        task_id = await self.enqueue(task)
        return await wait_for_result(self._pool, task_id, cancel_on_cancel=cancel_on_cancel)

    async def enqueue_many(
        self, tasks: Sequence[Task], *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int | None]:
        """Insert a batch in one statement; return one entry per input, in input order.

        Each entry is the new task's id, or None where the task was skipped as a duplicate of
        an existing (type, idempotency token) or unique key, or of an earlier task in the same
        batch (the first in input order is inserted).  Use `enqueue` to learn a duplicate's
        holder.

        Raises:
            InvalidTask: a task failed validation (``index`` says which); nothing was written.

        Cancellation: a checkpoint.  If cancelled, the whole batch was inserted or none of it.
        """
        tasks = list(tasks)
        if not tasks:
            return []
        plan = plan_batch(tasks, self._default_max_retry)
        with self._telemetry.enqueue(plan.types, single=False, has_delay=False) as op:
            plan = with_trace(plan, op.trace)
            inserted = await self._insert(plan, conn)
            op.inserted(inserted.counts, None)
        return inserted.ids

    async def _insert(self, plan: BatchPlan, conn: psycopg.AsyncConnection[Any] | None) -> Inserted:
        if conn is not None:
            return await repo.insert_batch(conn, plan)
        async with self._pool.connection() as own:
            return await repo.insert_batch(own, plan)

    async def _find(self, holder: Holder, conn: psycopg.AsyncConnection[Any] | None) -> int | None:
        if conn is not None:
            return await repo.find_holder(conn, holder)
        async with self._pool.connection() as own:
            return await repo.find_holder(own, holder)
