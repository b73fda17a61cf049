"""The rows of a `FakeDatabase`: the stored task record, the snapshot tests read (`FakeTask`),
and a leadership lease (`Leader`, a row of ``asynqpg_leader``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._core._results import decode_result
from .._core._row import TaskRow, TaskStatus
from .._core._unique import is_live

__all__ = ["FakeTask", "Leader", "Record"]


@dataclass(frozen=True, slots=True)
class FakeTask:
    """A snapshot of one task row of a `FakeDatabase`, from `FakeDatabase.get` or `rows`.

    Times are seconds on the fake's clock.

    Attributes:
        id: The task's id (ids grow from 1 in enqueue order).
        type: Its type.
        payload: Its payload.
        status: Where it is in its life.
        attempts_left: Executions still allowed (a claim consumes one).
        attempts_elapsed: Executions started, minus refunds.
        messages: Its error history, oldest first (the last 100 are kept).
        blocked_till: Not claimable before this time; while running, the lease's expiry.
        finalized_at: When it reached a terminal status, else None.
        lease_token: The current lease's token; set exactly while running.
        lease_owner: The consumer holding the lease, if any.
        idempotency_token: Its idempotency token, if any.
        created_at: When it was enqueued.
        attempted_at: When it was last claimed, if ever.
        queue: The queue it is on.
        priority: Its priority (larger runs first).
        result: What its handler returned, decoded as `Client.get_result` does (None: no
            result stored).
        progress: The progress its handler last reported (0.0 to 1.0), else None.
        progress_note: The note reported with it, if any.
    """

    id: int
    type: str
    payload: bytes
    status: TaskStatus
    attempts_left: int
    attempts_elapsed: int
    messages: tuple[str, ...]
    blocked_till: float
    finalized_at: float | None
    lease_token: int | None
    lease_owner: str | None
    idempotency_token: str | None
    created_at: float
    attempted_at: float | None
    queue: str = "default"
    priority: int = 0
    result: Any = None
    progress: float | None = None
    progress_note: str | None = None


@dataclass(slots=True, eq=False)
class Record:
    """One stored task: the modelled row and the columns the state table does not model."""

    id: int
    type: str
    payload: bytes
    idempotency_token: str | None
    trace_context: Any
    created_at: float
    row: TaskRow
    messages: list[str] = field(default_factory=list)
    lease_owner: str | None = None
    attempted_at: float | None = None
    queue: str = "default"
    priority: int = 0
    result: bytes | None = None
    result_codec: str | None = None
    progress: float | None = None
    progress_note: str | None = None
    #: A unique task's (key, window start or None), and the statuses it holds them in.
    unique_slot: tuple[str, datetime | None] | None = None
    unique_mask: int = 0

    def holds(self, slot: tuple[str, datetime | None], status: TaskStatus | None = None) -> bool:
        """Whether this task, in its status or in ``status``, holds the unique ``slot``."""
        if self.unique_slot != slot:
            return False
        return is_live((status or self.row.status).value, self.unique_mask)

    def snapshot(self) -> FakeTask:
        """This task as a frozen `FakeTask`."""
        row = self.row
        return FakeTask(
            self.id,
            self.type,
            self.payload,
            row.status,
            row.attempts_left,
            row.attempts_elapsed,
            tuple(self.messages),
            row.blocked_till,
            row.finalized_at,
            row.lease_token,
            self.lease_owner,
            self.idempotency_token,
            self.created_at,
            self.attempted_at,
            self.queue,
            self.priority,
            decode_result(self.result, self.result_codec),
            self.progress,
            self.progress_note,
        )


@dataclass(frozen=True, slots=True)
class Leader:
    """One group's leadership lease, as a row of ``asynqpg_leader`` holds it (fake's clock).

    Attributes:
        leader_id: The instance holding it.
        elected_at: When that instance won it (kept on renewal).
        expires_at: When it lapses unless renewed; live while the clock reads less.
    """

    leader_id: str
    elected_at: float
    expires_at: float
