"""The client's read model: frozen values for a task row, a page of tasks, and queue stats.

Theory of operation
-------------------
These are plain data with no behaviour beyond conversion: `TaskRecord.from_row` turns a row in
the column order every client statement returns (see ``_pg/sql/client.sql``) into a value,
`TaskSummary.from_row` does the same for a summary row (the payload's size in the payload's
place: lists never read payloads), and
`QueueStats.from_counts` folds the stats statement's (type, status, count, age) rows into
totals.  Nothing here touches the database or the clock, so the values are safe to hand to
any task, print, or compare in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ._row import TaskStatus

__all__ = [
    "QueueStats",
    "TaskPage",
    "TaskRecord",
    "TaskSummary",
    "ThroughputMinute",
    "TypeStats",
]

#: Number of task columns in a row; the client's statements put them last.
TASK_COLUMNS = 17


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of ``asynqpg_tasks``, as the client reads it.

    Times are timezone-aware and come from the database clock.  The counters are the stored
    ones: a claim moves one attempt from ``attempts_left`` to ``attempts_elapsed``.

    Attributes:
        id: the task's id.
        type: its type.
        payload: its payload bytes.
        status: where it is in its life.
        idempotency_token: its token, if it was enqueued with one.
        messages: error messages of earlier attempts, oldest first.
        blocked_till: not claimed before this time; while running, when the lease expires.
        attempts_left: executions still allowed.
        attempts_elapsed: executions started.
        created_at: when it was enqueued.
        updated_at: when the row last changed.
        finalized_at: when it reached completed, failed or cancelled, else None.
        attempted_at: when it was last claimed, else None.
        lease_token: the current lease's fencing token; set exactly while running.
        lease_owner: the id of the consumer holding the lease, while running.
        queue: the named queue it is on (``"default"`` unless enqueued on another).
        priority: its priority, -5 (least urgent) to 5 (most urgent).
        progress: the fraction (0.0 to 1.0) its handler last reported (`report_progress`),
            else None.  Read by `Client.get_task` and `Client.get_task_summary`; lists leave
            it None.
        progress_note: the note reported with it, if any.
        progress_at: when it was written (database clock), else None.
        result_size: the stored result's length in bytes (None: no result stored; read it
            with `Client.get_result`).  Like ``progress``, filled by the single-task reads.
    """

    id: int
    type: str
    payload: bytes
    status: TaskStatus
    idempotency_token: str | None
    messages: tuple[str, ...]
    blocked_till: datetime
    attempts_left: int
    attempts_elapsed: int
    created_at: datetime
    updated_at: datetime
    finalized_at: datetime | None
    attempted_at: datetime | None
    lease_token: int | None
    lease_owner: str | None
    queue: str
    priority: int
    progress: float | None = None
    progress_note: str | None = None
    progress_at: datetime | None = None
    result_size: int | None = None

    @property
    def payload_size(self) -> int:
        """The payload's length in bytes."""
        return len(self.payload)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TaskRecord:
        """Build a record from the task columns of a client statement's row, in order."""
        return cls(payload=bytes(row[2]), **_shared_fields(row))


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task without its payload: what `Client.list_tasks` and `Client.get_task_summary`
    return.  The same fields as `TaskRecord`, with ``payload_size`` for ``payload``, so a
    page of tasks costs the same however large their payloads are (`Client.get_payload`
    reads one).

    Attributes:
        id: the task's id.
        type: its type.
        payload_size: its payload's length in bytes.
        status: where it is in its life.
        idempotency_token: its token, if it was enqueued with one.
        messages: error messages of earlier attempts, oldest first.
        blocked_till: not claimed before this time; while running, when the lease expires.
        attempts_left: executions still allowed.
        attempts_elapsed: executions started.
        created_at: when it was enqueued.
        updated_at: when the row last changed.
        finalized_at: when it reached completed, failed or cancelled, else None.
        attempted_at: when it was last claimed, else None.
        lease_token: the current lease's fencing token; set exactly while running.
        lease_owner: the id of the consumer holding the lease, while running.
        queue: the named queue it is on (``"default"`` unless enqueued on another).
        priority: its priority, -5 (least urgent) to 5 (most urgent).
        progress: the fraction (0.0 to 1.0) its handler last reported (`report_progress`),
            else None.  Read by `Client.get_task` and `Client.get_task_summary`; lists leave
            it None.
        progress_note: the note reported with it, if any.
        progress_at: when it was written (database clock), else None.
        result_size: the stored result's length in bytes (None: no result stored; read it
            with `Client.get_result`).  Like ``progress``, filled by the single-task reads.
    """

    id: int
    type: str
    payload_size: int
    status: TaskStatus
    idempotency_token: str | None
    messages: tuple[str, ...]
    blocked_till: datetime
    attempts_left: int
    attempts_elapsed: int
    created_at: datetime
    updated_at: datetime
    finalized_at: datetime | None
    attempted_at: datetime | None
    lease_token: int | None
    lease_owner: str | None
    queue: str
    priority: int
    progress: float | None = None
    progress_note: str | None = None
    progress_at: datetime | None = None
    result_size: int | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TaskSummary:
        """Build a summary from a summary row's task columns, in order."""
        return cls(payload_size=int(row[2]), **_shared_fields(row))


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of `Client.list_tasks`.

    Attributes:
        tasks: the tasks on this page, in the requested order, without their payloads.
        total: how many tasks match the filters, ignoring limit, offset and cursor (counted
            in the same snapshot as the page).
        next_cursor: pass as ``after=`` with the same filters and order to get the next page;
            None when this page holds fewer tasks than the limit (nothing more matched).
    """

    tasks: tuple[TaskSummary, ...]
    total: int
    next_cursor: str | None


def _zero_counts() -> dict[str, int]:
    return {status.value: 0 for status in TaskStatus}


@dataclass(frozen=True, slots=True)
class TypeStats:
    """The counts of one task type, from `Client.stats`.

    Attributes:
        type: the task type.
        total: its tasks in the table.
        by_status: its tasks per status value (``"pending"``, ...); every status is a key.
        oldest_pending_age: seconds the longest-waiting *ready* pending task of this type has
            been ready (now minus its ``blocked_till``); None when no pending task is ready.
            Tasks scheduled for later do not count, so this measures queue lag.
    """

    type: str
    total: int
    by_status: Mapping[str, int]
    oldest_pending_age: float | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts over the whole table, from `Client.stats` (one snapshot).

    Attributes:
        total: tasks in the table.
        by_status: tasks per status value (``"pending"``, ...); every status is a key.
        by_type: one entry per task type present, sorted by type.
    """

    total: int
    by_status: Mapping[str, int]
    by_type: tuple[TypeStats, ...]

    @classmethod
    def from_counts(cls, rows: Iterable[Sequence[Any]]) -> QueueStats:
        """Fold (type, status, count, ready_pending_age) rows into totals."""
        overall = _zero_counts()
        per_type: dict[str, dict[str, int]] = {}
        ages: dict[str, float | None] = {}
        for task_type, status, count, age in rows:
            key = TaskStatus(status).value
            overall[key] += int(count)
            per_type.setdefault(task_type, _zero_counts())[key] += int(count)
            if age is not None:
                ages[task_type] = max(0.0, float(age))
        by_type = tuple(
            TypeStats(
                type=name,
                total=sum(counts.values()),
                by_status=MappingProxyType(counts),
                oldest_pending_age=ages.get(name),
            )
            for name, counts in sorted(per_type.items())
        )
        return cls(
            total=sum(overall.values()),
            by_status=MappingProxyType(overall),
            by_type=by_type,
        )


@dataclass(frozen=True, slots=True)
class ThroughputMinute:
    """How many tasks finished in one minute, from `Client.throughput`.

    Attributes:
        minute: the start of the minute (database clock, timezone-aware).
        completed: tasks that completed in it.
        failed: tasks that failed for good in it (retries and cancels are not counted).
    """

    minute: datetime
    completed: int
    failed: int


def _shared_fields(row: Sequence[Any]) -> dict[str, Any]:
    """The fields a `TaskRecord` and a `TaskSummary` build alike from a client statement's
    task columns (all but the third: the payload, or its size), and the progress and
    result size the single-task reads add after them."""
    extra: dict[str, Any] = {}
    if len(row) > TASK_COLUMNS:
        progress, note, progress_at, result_size = row[TASK_COLUMNS:]
        extra = {
            "progress": None if progress is None else float(progress),
            "progress_note": note,
            "progress_at": progress_at,
            "result_size": None if result_size is None else int(result_size),
        }
        row = row[:TASK_COLUMNS]
    (
        task_id,
        task_type,
        _payload_or_size,
        status,
        token,
        messages,
        blocked_till,
        attempts_left,
        attempts_elapsed,
        created_at,
        updated_at,
        finalized_at,
        attempted_at,
        lease_token,
        lease_owner,
        queue,
        priority,
    ) = row
    return {
        "id": int(task_id),
        "type": task_type,
        "status": TaskStatus(status),
        "idempotency_token": token,
        "messages": tuple(messages or ()),
        "blocked_till": blocked_till,
        "attempts_left": int(attempts_left),
        "attempts_elapsed": int(attempts_elapsed),
        "created_at": created_at,
        "updated_at": updated_at,
        "finalized_at": finalized_at,
        "attempted_at": attempted_at,
        "lease_token": None if lease_token is None else int(lease_token),
        "lease_owner": lease_owner,
        "queue": queue,
        "priority": int(priority),
        **extra,
    }
