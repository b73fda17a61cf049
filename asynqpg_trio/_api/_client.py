"""The client: inspect and manage tasks (get, list, cancel, retry, delete, bulk, stats, throughput).

Lists and `Client.get_task_summary` read each payload's size, never a payload; only
`Client.get_task` and `Client.get_payload` (which can refuse one over ``max_bytes`` without
reading it) do.

Theory of operation
-------------------
Each method checks its arguments first (`_listing`; a bad call runs nothing), then runs ONE
statement from ``_pg/sql/client.sql``, on the caller's connection when ``conn=`` is given (so
inside the caller's transaction: a rollback undoes it, and NOTIFYs go out only at commit) or
else on a pooled autocommit connection.

Single-task writes (cancel, retry, delete) are decide-in-SQL, report-in-Python: the statement
locks the row, applies the event only where the state table allows it, and returns the status
it found.  The client then asks the pure state table (`_state.allowed_pairs`) whether
(event, status) is legal, and when it is not raises the matching error carrying the task as
it is now: `TaskRunning`, `TaskAlreadyAvailable` or `TaskAlreadyFinalized`.  A missing row is
`TaskNotFound`.  So the table in ``_state.py`` is the one referee, and a test checks the SQL
against it for every status.

Bulk retry and delete loop over batches of `BATCH_SIZE` failed tasks (``FOR UPDATE SKIP
LOCKED``), each batch one statement, until a batch comes back short.  Cancelling any method
leaves every finished statement done and the current one either done or not: never half done.

Telemetry: get, get_task_summary, get_payload, cancel, retry and delete are
``asynqpg.<method>`` client spans with ``task_id``; list is ``asynqpg.list_tasks`` with
``result_count``.  Only unexpected errors mark a span failed: not-found and wrong-state
refusals are answers, not failures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, final

from .._core._errors import (
    AsynqpgError,
    InvalidQuery,
    PayloadTooLarge,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskNotFound,
    TaskRunning,
)
from .._core._listing import DEFAULT_LIMIT, check_task_id, check_type, encode_cursor, plan_list
from .._core._records import QueueStats, TaskPage, TaskRecord, TaskSummary, ThroughputMinute
from .._core._row import TaskStatus
from .._core._state import Event, allowed_pairs
from .._pg import _client_repo as repo
from .._pg._pool import Pool
from .._telemetry._telemetry import Telemetry
from ._results import ResultReader

if TYPE_CHECKING:
    import psycopg
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["Client", "refusal"]

_ALLOWED: Final = frozenset(allowed_pairs())
_PAST: Final = {Event.CANCEL: "cancelled", Event.MANUAL_RETRY: "retried", Event.DELETE: "deleted"}
_SPAN: Final = {
    Event.CANCEL: "asynqpg.cancel_task",
    Event.MANUAL_RETRY: "asynqpg.retry_task",
    Event.DELETE: "asynqpg.delete_task",
}


def refusal(event: Event, status: TaskStatus, task: TaskRecord) -> AsynqpgError | None:
    """The error for ``event`` on a task found in ``status``, or None if the table allows it."""
    if (event, status) in _ALLOWED:
        return None
    verb = _PAST[event]
    if status is TaskStatus.RUNNING:
        return TaskRunning(
            f"task {task.id} is running, so it cannot be {verb} (cancel it first)", task
        )
    if status is TaskStatus.PENDING:
        return TaskAlreadyAvailable(
            f"task {task.id} is already pending (available for processing), so it cannot be {verb}",
            task,
        )
    return TaskAlreadyFinalized(f"task {task.id} is already {status}, so it cannot be {verb}", task)


@final
class Client(ResultReader):
    """Reads and manages tasks: the operator's side of the queue.

    Args:
        pool_or_dsn: an `open_pool` pool, or a DSN (the client then keeps a small pool of its
            own, closed by `aclose` or ``async with``).
        meter_provider: the OpenTelemetry meter provider (default: the global one).
        tracer_provider: the OpenTelemetry tracer provider (default: the global one).

    Every method takes ``conn=``: a psycopg async connection to run on instead of the pool,
    inside its open transaction if it has one.  Queue administration (`pause_queue`,
    `resume_queue`, `queues`, `set_limit`, `clear_limit`, `limits`) and results
    (`get_result`, `wait`) come from its bases.
    """

    def __init__(
        self,
        pool_or_dsn: Pool | str,
        *,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._telemetry = Telemetry(meter_provider, tracer_provider)
        super().__init__(pool_or_dsn)

    async def get_task(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> TaskRecord:
        """Return the task with this id.

        Raises:
            TaskNotFound: no task has this id.
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint; reads only.
        """
        task_id = check_task_id(task_id)
        with self._telemetry.client_span("asynqpg.get_task", task_id):
            async with self._connection(conn) as c:
                task = await repo.get_task(c, task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    async def get_task_summary(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> TaskSummary:
        """Return the task with this id without its payload (``payload_size`` instead).

        Raises:
            TaskNotFound: no task has this id.
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint; reads only.
        """
        task_id = check_task_id(task_id)
        with self._telemetry.client_span("asynqpg.get_task_summary", task_id):
            async with self._connection(conn) as c:
                task = await repo.get_task_summary(c, task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    async def get_payload(
        self,
        task_id: int,
        *,
        max_bytes: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> bytes:
        """Return the payload of the task with this id, if it is at most ``max_bytes`` long.

        A payload over the limit is not read at all: its size comes from the stored length.

        Args:
            task_id: the task.
            max_bytes: the longest payload to read (None: any length).
            conn: run on this connection instead of the pool.

        Raises:
            TaskNotFound: no task has this id.
            PayloadTooLarge: the payload is longer than ``max_bytes`` (its ``size`` says how
                long).
            InvalidQuery: ``task_id`` or ``max_bytes`` is not a (non-negative) int.

        Cancellation: a checkpoint; reads only.
        """
        task_id = check_task_id(task_id)
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
        ):
            raise InvalidQuery(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        with self._telemetry.client_span("asynqpg.get_payload", task_id):
            async with self._connection(conn) as c:
                found = await repo.get_payload(c, task_id, max_bytes)
        if found is None:
            raise TaskNotFound(task_id)
        if found.payload is None:
            assert max_bytes is not None
            raise PayloadTooLarge(task_id, found.size, max_bytes)
        return found.payload

    async def list_tasks(
        self,
        *,
        statuses: Iterable[TaskStatus | str] | TaskStatus | str | None = None,
        types: Iterable[str] | str | None = None,
        queues: Iterable[str] | str | None = None,
        ids: Iterable[int] | int | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        scheduled: bool = False,
        order_by: str = "id",
        descending: bool = False,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        after: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> TaskPage:
        """Return one page of the tasks that match every filter given, and their total.

        The tasks are `TaskSummary` values: each payload's size, never the payload (read one
        with `get_payload`), so a page costs the same however large the payloads are.

        Each filter matches any of its values; None or an empty collection is no filter.
        The order is total (the sort column, then id in the same direction), so pages do not
        overlap or skip rows while the table is unchanged.

        Two ways to page: ``offset`` (skip that many rows; simple, but rows inserted or
        deleted in front shift later pages) or keyset: pass ``after=page.next_cursor`` with
        the same filters, ``order_by`` and ``descending`` to get the rows strictly after the
        previous page's last one (stable under concurrent writes, cheap at any depth).

        Args:
            statuses: task statuses to include.
            types: task types to include.
            queues: queues to include (by name).
            ids: task ids to include.
            created_after: include tasks created at or after this aware datetime.
            created_before: include tasks created at or before this aware datetime.
            scheduled: only pending tasks not due yet (ready later than the database's
                clock says now): the delayed and retrying-later ones.
            order_by: ``"id"``, ``"created_at"``, ``"updated_at"`` or ``"blocked_till"``.
            descending: sort high to low.
            limit: page size; clamped to 1 .. 10000.
            offset: rows to skip (not with ``after``).
            after: a cursor from a previous page's ``next_cursor``.
            conn: run on this connection instead of the pool.

        Returns:
            The page: ``tasks``, ``total`` (all matching rows, same snapshot) and
            ``next_cursor`` (None when this page was not full).

        Raises:
            InvalidQuery: an unknown status or order field, a queue name no queue can have,
                a naive datetime, a negative offset, ``offset`` with ``after``, or a
                malformed or mismatched cursor.

        Cancellation: a checkpoint; reads only.
        """
        plan = plan_list(
            statuses=statuses,
            types=types,
            queues=queues,
            ids=ids,
            created_after=created_after,
            created_before=created_before,
            scheduled=scheduled,
            order_by=order_by,
            descending=descending,
            limit=limit,
            offset=offset,
            after=after,
        )
        with self._telemetry.client_span("asynqpg.list_tasks") as span:
            async with self._connection(conn) as c:
                total, tasks = await repo.list_tasks(c, plan)
            if span.is_recording():
                span.set_attribute("result_count", len(tasks))
        cursor = None
        if len(tasks) == plan.limit:
            cursor = encode_cursor(plan.order_by, plan.descending, tasks[-1])
        return TaskPage(tasks=tuple(tasks), total=total, next_cursor=cursor)

    async def _write(
        self,
        event: Event,
        task_id: int,
        conn: psycopg.AsyncConnection[Any] | None,
    ) -> TaskRecord:
        task_id = check_task_id(task_id)
        with self._telemetry.client_span(_SPAN[event], task_id):
            async with self._connection(conn) as c:
                outcome = await repo.write_task(c, event, task_id)
        if outcome is None:
            raise TaskNotFound(task_id)
        error = refusal(event, outcome.old_status, outcome.task)
        if error is not None:
            raise error
        return outcome.task

    async def cancel_task(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> TaskRecord:
        """Cancel a pending, running or failed task; return it as it is now.

        Cancelling a cancelled task changes nothing and is not an error.  Cancelling a running
        task also notifies (channel ``asynqpg_cancel``) the consumer holding it, which cancels
        the handler; the handler's outcome is then discarded, since the lease is gone.

        Raises:
            TaskNotFound: no task has this id.
            TaskAlreadyFinalized: the task is completed (``.task`` is it, unchanged).
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint.  One atomic statement: if cancelled, the task was
        cancelled or not (check with `get_task`); with ``conn`` in a transaction, the caller's
        commit decides, and the consumer is notified only at commit.
        """
        return await self._write(Event.CANCEL, task_id, conn)

    async def retry_task(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> TaskRecord:
        """Put a failed or cancelled task back to pending, ready now; return it.

        It gets at least one attempt (``attempts_left`` is raised to 1 if it was 0); its
        messages and ``attempts_elapsed`` are kept.  Idle consumers are woken.

        Raises:
            TaskNotFound: no task has this id.
            TaskAlreadyAvailable: the task is pending already.
            TaskRunning: the task is running.
            TaskAlreadyFinalized: the task is completed.
            InvalidQuery: ``task_id`` is not an int.

        Each state error's ``.task`` is the task as it is now.

        Cancellation: a checkpoint.  One atomic statement: if cancelled, the task was
        re-queued or not; with ``conn`` in a transaction, the caller's commit decides.
        """
        return await self._write(Event.MANUAL_RETRY, task_id, conn)

    async def delete_task(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> TaskRecord:
        """Delete a task that is not running; return it as it was.

        Raises:
            TaskNotFound: no task has this id.
            TaskRunning: the task is running and was kept (``.task``); cancel it first.
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint.  One atomic statement: if cancelled, the task was deleted
        or not; with ``conn`` in a transaction, the caller's commit decides.
        """
        return await self._write(Event.DELETE, task_id, conn)

    async def _bulk(
        self,
        batch: Callable[[psycopg.AsyncConnection[Any], str | None], Awaitable[int]],
        task_type: str | None,
        conn: psycopg.AsyncConnection[Any] | None,
    ) -> int:
        task_type = check_type(task_type)
        done = 0
        while True:
            async with self._connection(conn) as c:
                n = await batch(c, task_type)
            done += n
            if n < repo.BATCH_SIZE:
                return done

    async def retry_failed(
        self, type: str | None = None, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """Re-queue every failed task (of one type, if given) as `retry_task` does.

        Works in batches of 1000, lowest ids first, skipping rows another transaction holds
        locked (those stay failed).  Cancelled tasks are not included.

        Returns:
            How many tasks were re-queued.

        Cancellation: a checkpoint between and during batches.  If cancelled, the batches
        already run stay done (each commits on its own unless ``conn`` is in a transaction,
        when the caller's commit decides).
        """
        return await self._bulk(repo.retry_failed_batch, type, conn)

    async def delete_failed(
        self, type: str | None = None, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """Delete every failed task (of one type, if given).

        Works in batches of 1000, lowest ids first, skipping rows another transaction holds
        locked (those are kept).

        Returns:
            How many tasks were deleted.

        Cancellation: a checkpoint between and during batches.  If cancelled, the batches
        already run stay done (each commits on its own unless ``conn`` is in a transaction,
        when the caller's commit decides).
        """
        return await self._bulk(repo.delete_failed_batch, type, conn)

    async def stats(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> QueueStats:
        """Count the tasks by status and by type, with each type's queue lag.

        Returns:
            Totals with every status as a key, and one entry per type (sorted by type) with
            its per-status counts and ``oldest_pending_age`` in seconds.

        Cancellation: a checkpoint; reads only.  One statement, so one snapshot.
        """
        async with self._connection(conn) as c:
            return await repo.stats(c)

    async def throughput(
        self, minutes: int = 15, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[ThroughputMinute, ...]:
        """Count the tasks that completed and that failed in each of the last minutes.

        Args:
            minutes: how many minutes, 1 to 1440; the last one is the current, partial minute.
            conn: run on this connection instead of the pool.

        Returns:
            One entry per minute, oldest first (minutes with nothing finished give zeros).
            Tasks already removed by the cleaner are not counted.

        Raises:
            InvalidQuery: ``minutes`` is not an int from 1 to 1440.

        Cancellation: a checkpoint; reads only.
        """
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            raise InvalidQuery(f"minutes must be an int from 1 to 1440, got {minutes!r}")
        async with self._connection(conn) as c:
            return tuple(await repo.throughput(c, minutes))
