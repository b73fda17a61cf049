"""`FakeDatabase`: the consumer's repositories in memory, for tests without PostgreSQL.

Theory of operation
-------------------
`FakeDatabase` is the tasks repository the consumer's actors use, built on the maintenance
repository (`FakeMaintenance`, ``_fake_maintenance.py``) and the tables under both
(`FakeTable`, ``_table.py``, where every row change goes through the state table's applier).
The SQL statements in ``_pg/sql/tasks.sql`` are the reference: the contract suite
(``tests/contract``) runs the same tests against both, and where they differ the fake is wrong.

Time is the injected ``clock`` (seconds; by default the event loop's, `anyio.current_time`, so
Trio's ``autojump_clock`` drives lease expiry and delays).  Every repository method is a
checkpoint and then runs to completion without yielding, so it is atomic, like the one
transaction it stands for; cancelled at the checkpoint, it changes nothing.  Notifications (a
ready task enqueued or re-queued: a wake-up; a running task cancelled: a cancel with its id)
go to every open `notifications` iterator.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

import anyio

from .._core._batching import FlushPlan, OutcomeKind
from .._core._errors import DuplicateTask, TaskNotFound
from .._core._pacing import ClaimPlan
from .._core._progress import Progress
from .._core._row import TaskStatus, TransitionParams
from .._core._rows import ClaimedTask, LostLease, Notice, QueueDepth
from .._core._state import Event, apply, matching_rules
from .._core._task import check_priority, check_queue
from .._core._unique import Unique, derived_key, period_micros, states_mask, window_start
from ._claiming import FakeLimit, charge, choose
from ._fake_maintenance import FakeMaintenance
from ._listening import FakeListening
from ._stored import FakeTask, Record
from ._table import EPOCH

__all__ = ["EPOCH", "FakeDatabase"]

_NEW_CHANNEL: Final = "asynqpg_new"
_CANCEL_CHANNEL: Final = "asynqpg_cancel"
_WORKING: Final = (TaskStatus.PENDING, TaskStatus.RUNNING)

#: The event each outcome kind's statement implements (fail, retry: their twins write alike).
_EVENT_OF: Final[dict[OutcomeKind, Event]] = {
    OutcomeKind.COMPLETE: Event.COMPLETE,
    OutcomeKind.FAIL: Event.FAIL,
    OutcomeKind.RETRY: Event.RETRY,
    OutcomeKind.SNOOZE: Event.SNOOZE,
    OutcomeKind.RELEASE: Event.RELEASE,
}


class FakeDatabase(FakeMaintenance):
    """An in-memory task table implementing the consumer's tasks repository and the
    maintenance repository (leader election, rescue of expired leases, cleaning).

    Pass it where the consumer's actors or its maintenance (the elector, the janitor and the
    cleaner) take their repository; enqueue with `enqueue`, look with `get`, `rows` and
    `leader`, act as a client with `cancel`, `retry` and `delete`, and inject a database error
    with `fail_next`.  See the module docstrings for what it guarantees.

    Args:
        clock: Returns the database's current time in seconds; by default the event loop's
            clock (`anyio.current_time`), read only inside a running loop.
        epoch: The datetime of instant 0 on ``clock`` (for the datetimes claims return).
    """

    def __init__(
        self, *, clock: Callable[[], float] = anyio.current_time, epoch: datetime = EPOCH
    ) -> None:
        super().__init__(clock=clock, epoch=epoch)
        self._paused: set[str] = set()
        self._limits: dict[tuple[str, str], FakeLimit] = {}

    # -- test helpers (synchronous, no checkpoint) ------------------------------------------

    @property
    def epoch(self) -> datetime:
        """The datetime of instant 0 on the clock."""
        return self._epoch

    def enqueue(
        self,
        task_type: str,
        payload: bytes = b"",
        *,
        delay: float = 0.0,
        max_retry: int = 3,
        idempotency_token: str | None = None,
        trace_context: Any = None,
        queue: str = "default",
        priority: int = 0,
        unique: Unique | None = None,
    ) -> int:
        """Insert a pending task, ready after ``delay`` seconds; return its id.

        ``max_retry`` is the total number of runs allowed (0 acts as 1), as for `Producer`.
        A task ready now notifies the wake-up channel, with its priority (as a producer's
        enqueue says the most urgent priority it made ready).

        Raises:
            InvalidTask: ``queue`` is not a queue name, or ``priority`` is not an int from -5
                to 5 (as `Producer` refuses it).
            DuplicateTask: a task of this type holds ``idempotency_token`` already, or holds
                the ``unique`` key (in the same period) in one of its unique states.
        """
        queue, priority = check_queue(queue), check_priority(priority)
        if idempotency_token is not None:
            for record in self._records.values():
                if record.type == task_type and record.idempotency_token == idempotency_token:
                    raise DuplicateTask(task_type, idempotency_token, record.id)
        slot = None if unique is None else self._slot(unique, payload)
        if slot is not None:
            self._refuse_held(task_type, slot, None)
        now = self.now()
        params = TransitionParams(now=now, delay=max(delay, 0.0), max_retry=max_retry)
        row = apply(None, Event.ENQUEUE, params)
        assert row is not None  # enqueue creates a row
        task_id, self._next_id = self._next_id, self._next_id + 1
        self._records[task_id] = Record(
            task_id, task_type, payload, idempotency_token, trace_context, now, row
        )
        self._records[task_id].queue = queue
        self._records[task_id].priority = priority
        if unique is not None:
            self._records[task_id].unique_slot = slot
            self._records[task_id].unique_mask = states_mask(unique.states)
        if row.blocked_till <= now:
            self.notify(_NEW_CHANNEL, str(priority))
        return task_id

    def _slot(self, unique: Unique, payload: bytes) -> tuple[str, datetime | None]:
        """The (key, window start) a unique task enqueued now takes, as the insert computes
        them (the window on this clock's datetime)."""
        key = derived_key(payload) if unique.key is None else unique.key
        if unique.period is None:
            return key, None
        now = self.epoch + timedelta(seconds=self.now())
        return key, window_start(now, period_micros(unique.period))

    def _refuse_held(
        self, task_type: str, slot: tuple[str, datetime | None], mover: Record | None
    ) -> None:
        """Raise `DuplicateTask` if a task of ``task_type`` other than ``mover`` holds
        ``slot``."""
        for record in self._records.values():
            if record is not mover and record.type == task_type and record.holds(slot):
                raise DuplicateTask(task_type, None, record.id, unique_key=slot[0])

    def _guard_unique_move(self, record: Record | None, to: TaskStatus) -> None:
        """An operator's move of a unique task into its unique states while another task
        holds its key is refused (`DuplicateTask`), as the client's statements do."""
        if record is None or record.unique_slot is None or record.holds(record.unique_slot):
            return
        if record.holds(record.unique_slot, to):
            self._refuse_held(record.type, record.unique_slot, record)

    def get(self, task_id: int) -> FakeTask:
        """A snapshot of one task.

        Raises:
            TaskNotFound: there is no such task (never enqueued, or deleted).
        """
        record = self._records.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record.snapshot()

    def rows(self) -> list[FakeTask]:
        """Snapshots of every task, in id order."""
        return [self._records[i].snapshot() for i in sorted(self._records)]

    def cancel(self, task_id: int) -> FakeTask:
        """Cancel a task as a client does (a running task's holder is notified at once).

        Raises:
            IllegalTransition: the task is completed, or missing (the state table's answer).
            DuplicateTask: the task is unique, cancelled is one of its unique states, and
                another task holds its key.
        """
        record = self._records.get(task_id)
        running = record is not None and record.row.status is TaskStatus.RUNNING
        self._guard_unique_move(record, TaskStatus.CANCELLED)
        self._transition(record, Event.CANCEL, TransitionParams(now=self.now()))
        if running:
            self.notify(_CANCEL_CHANNEL, str(task_id))
        return self.get(task_id)

    def retry(self, task_id: int) -> FakeTask:
        """Re-queue a failed or cancelled task as a client does (ready now; notifies).

        Raises:
            IllegalTransition: the task is not failed or cancelled, or missing.
            DuplicateTask: the task is unique and another task holds its key.
        """
        record = self._records.get(task_id)
        self._guard_unique_move(record, TaskStatus.PENDING)
        self._transition(record, Event.MANUAL_RETRY, TransitionParams(now=self.now()))
        self.notify(_NEW_CHANNEL, "")
        return self.get(task_id)

    def delete(self, task_id: int) -> None:
        """Delete a task that is not running, as a client does.

        Raises:
            IllegalTransition: the task is running, or missing.
        """
        self._transition(self._records.get(task_id), Event.DELETE, TransitionParams(self.now()))

    def pause(self, queue: str) -> None:
        """Pause a queue: claims leave it out until `resume`."""
        self._paused.add(queue)

    def resume(self, queue: str) -> None:
        """Resume a paused queue (notifies the wake-up channel)."""
        self._paused.discard(queue)
        self.notify(_NEW_CHANNEL, "")

    def set_limit(
        self,
        scope: str,
        name: str,
        *,
        max_running: int | None = None,
        rate: tuple[int, float] | None = None,
        burst: int | None = None,
    ) -> None:
        """Set a cluster-wide limit on a queue or type (``scope`` ``"queue"`` or ``"type"``):
        at most ``max_running`` running, and ``rate`` = (starts, per seconds) in bursts of up
        to ``burst`` (default: the starts), the bucket full now.

        Raises:
            ConfigurationError: what `Client.set_limit` refuses (no limit given, a value out
                of range, a scope other than ``"queue"`` and ``"type"``).
        """
        limit = FakeLimit.checked(scope, name, max_running, rate, burst, now=self.now())
        self._limits[(scope, name)] = limit

    def clear_limit(self, scope: str, name: str) -> bool:
        """Remove the limit on a queue or type; return whether there was one."""
        return self._limits.pop((scope, name), None) is not None

    # -- the TasksRepository ----------------------------------------------------------------

    async def claim(
        self,
        plan: ClaimPlan,
        *,
        owner: str,
        lease: float,
        takeover_message: str,
        exhausted_message: str,
        grace: float,
    ) -> list[ClaimedTask]:
        """Claim due tasks as ``plan`` says (see `_claiming.choose`): pending ones are
        claimed, running ones whose lease expired are taken over (or failed for want of an
        attempt).

        Cancellation: a checkpoint before anything changes (``grace`` is not needed).
        """
        await self._enter("claim")
        now = self.now()
        claimed: list[ClaimedTask] = []
        chosen = choose(self._records.values(), plan, now, self._paused, self._limits)
        for record in chosen:
            taken_over = record.row.status is TaskStatus.RUNNING
            event = Event.LEASE_TAKEOVER if taken_over else Event.CLAIM
            params = TransitionParams(now=now, new_token=self._next_token, lease=lease)
            rules = matching_rules(record.row, event, params)
            runs = bool(rules) and rules[0].target is TaskStatus.RUNNING
            message = takeover_message if runs else exhausted_message
            self._transition(record, event, params, message=message, owner=owner)
            if record.row.lease_token == self._next_token:
                self._next_token += 1
                charge(self._limits, record)
            claimed.append(self._claimed(record, taken_over=taken_over))
        return claimed

    async def next_ready_in(self, pairs: Sequence[tuple[str, str]]) -> float | None:
        """Seconds until the earliest pending task (or running task's lease expiry) of these
        (queue, type) pairs (None if there is none), paused queues left out; negative when
        it is overdue.

        Cancellation: a checkpoint.
        """
        await self._enter("next_ready_in")
        wanted = set(pairs)
        times = [
            r.row.blocked_till
            for r in self._records.values()
            if (r.queue, r.type) in wanted
            and r.queue not in self._paused
            and r.row.status in _WORKING
        ]
        return None if not times else min(times) - self.now()

    async def write_outcomes(self, plan: FlushPlan) -> set[int]:
        """Write a flush plan at once, each outcome fenced by its lease token; return the ids
        written (the others were stale).

        Cancellation: a checkpoint before anything is written.
        """
        await self._enter("write_outcomes")
        now = self.now()
        written: set[int] = set()
        for batch in plan.batches:
            event = _EVENT_OF[batch.kind]
            extras = batch.extras or ((None, None, None),) * len(batch)
            for task_id, token, delay, message, (result, codec, progress) in zip(
                batch.ids, batch.tokens, batch.delays, batch.messages, extras, strict=True
            ):
                params = TransitionParams(now=now, delay=delay, token=token)
                record = self._records.get(task_id)
                if self._transition(record, event, params, message=message):
                    written.add(task_id)
                    if record is not None and batch.kind is OutcomeKind.COMPLETE:
                        record.result, record.result_codec = result, codec
                        if progress is not None:
                            record.progress = progress.fraction
                            record.progress_note = progress.note
        return written

    async def write_progress(self, reports: Sequence[tuple[int, int, Progress]]) -> set[int]:
        """Store the latest progress of running tasks, fenced by lease; return the ids
        written.

        Cancellation: a checkpoint before anything is written.
        """
        await self._enter("write_progress")
        written: set[int] = set()
        for task_id, token, progress in reports:
            record = self._records.get(task_id)
            if (
                record is not None
                and record.row.status is TaskStatus.RUNNING
                and record.row.lease_token == token
            ):
                record.progress, record.progress_note = progress.fraction, progress.note
                written.add(task_id)
        return written

    async def extend_leases(self, ids: list[int], tokens: list[int], lease: float) -> set[int]:
        """Push the leases forward by ``lease`` from now; return the ids still held.

        Cancellation: a checkpoint before anything changes.
        """
        await self._enter("extend_leases")
        now = self.now()
        return {
            task_id
            for task_id, token in zip(ids, tokens, strict=True)
            if self._transition(
                self._records.get(task_id),
                Event.EXTEND_LEASE,
                TransitionParams(now=now, token=token, lease=lease),
            )
        }

    async def lost_leases(self, ids: list[int], tokens: list[int]) -> list[LostLease]:
        """Of these leases, those no longer held, with their task's status and owner now.

        Cancellation: a checkpoint.
        """
        await self._enter("lost_leases")
        lost: list[LostLease] = []
        for task_id, token in zip(ids, tokens, strict=True):
            record = self._records.get(task_id)
            if record is None:
                lost.append(LostLease(task_id, None, None))
            elif record.row.lease_token != token or record.row.status is not TaskStatus.RUNNING:
                lost.append(LostLease(task_id, record.row.status.value, record.lease_owner))
        return lost

    async def queue_depth(
        self, types: Sequence[str], queues: Sequence[str] = ("default",)
    ) -> list[QueueDepth]:
        """Per type, over ``queues``: pending tasks ready now, and seconds the oldest has
        been ready.

        Cancellation: a checkpoint.
        """
        await self._enter("queue_depth")
        now = self.now()
        depths: list[QueueDepth] = []
        for task_type in types:
            ready = [
                r.row.blocked_till
                for r in self._records.values()
                if r.type == task_type
                and r.queue in queues
                and r.row.status is TaskStatus.PENDING
                and r.row.blocked_till <= now
            ]
            depths.append(QueueDepth(task_type, len(ready), now - min(ready) if ready else 0.0))
        return depths

    @asynccontextmanager
    async def notifications(self) -> AsyncIterator[FakeListening]:
        """Listen: entered at once (after a checkpoint); iterate the value for notices sent
        from then on until the block ends, or claim on it.

        Cancellation: a checkpoint on entry and while waiting for a notice.
        """
        await self._enter("notifications")
        send, receive = anyio.create_memory_object_stream[Notice](math.inf)
        self._listeners.append(send)
        try:
            with receive:
                yield FakeListening(self, receive)
        finally:
            self._listeners.remove(send)
            send.close()

    # -- internals --------------------------------------------------------------------------

    def _claimed(self, record: Record, *, taken_over: bool) -> ClaimedTask:
        row = record.row
        return ClaimedTask(
            record.id,
            record.type,
            record.payload,
            record.idempotency_token,
            row.status.value,
            row.attempts_left,
            row.attempts_elapsed,
            self._datetime(record.created_at),
            None if record.attempted_at is None else self._datetime(record.attempted_at),
            list(record.messages) if record.messages else None,
            row.lease_token,
            record.trace_context,
            taken_over,
            record.queue,
            record.priority,
        )
