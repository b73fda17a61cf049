"""Handler actors: run one task at a time under its own cancel scope, report its outcome.

Theory of operation
-------------------
Each registered type has ``workers`` actors reading from the type's memory channel, which
carries the leases the fetcher claimed (each with the handler's `TaskInfo`).  For each task an
actor sets the task metadata context variable and runs the middleware chain and handler inside
a cancel scope with the type's timeout as deadline.  The scope is recorded on the task's lease,
so the lease keeper and the listener can cancel it when the task is cancelled remotely or its
lease is lost.  An actor takes queued tasks without yielding, up to `STREAK` in a row: the
per-task cost of a no-op handler is then the handler's, not the scheduler's.

Each task of a streak is: take (from the channel, without waiting after the first) -> plan
(the deadline rule, pure: `_core._settle.deadline_after`) -> run (the handler, under the
scope) -> settle (pure: `_core._settle.settle`, which calls `decide`) -> act (counters,
telemetry, the lease book, the send to the completer).  The outcome goes to the completer's
channel (bounded: a slow completer blocks handlers, which stops the fetcher claiming).
Exceptions from handlers never escape; they are outcomes.

A run whose scope was cancelled (its deadline passed, its lease was lost, or the shutdown
grace ended) is settled by why it was cancelled, not by how the handler ended: a handler may
swallow the cancellation and return, or raise something else, and its work still did not
finish.  A timeout is a failed attempt ("timed out after N s"), a lost lease writes nothing,
and a run cut short by shutdown is released.

Shutdown: once the consumer is stopping, an actor releases (back to pending, no attempt used)
every task it receives instead of starting it; a running handler whose scope is cancelled at
the end of the shutdown grace is released too.  A lost lease writes nothing: the row already
says what happened (cancelled, or taken over).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import sniffio
import trio

from .._core._batching import Outcome, OutcomeKind
from .._core._metadata import CURRENT_TASK
from .._core._progress import CURRENT_SINK, Progress, ProgressSink
from .._core._results import DEFAULT_RESULT_LIMIT, encode_result
from .._core._settle import DEADLINE_SLACK, Settled, deadline_after, run_error, settle

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectSendStream

    from .._core._book import CancelScopeLike, Lease
    from .._core._config import ErrorHandler, HandlerFn, Middleware
    from .._core._retry import RetryPolicy
    from .._telemetry._telemetry import QuietRun, TaskRun

__all__ = ["HandlerSettings", "build_chain", "run_worker"]

logger = logging.getLogger("asynqpg_trio.handlers")


class LeaseSource(Protocol):
    """Where a handler actor takes its type's leases from (`_buffer.LeaseReceiver`, or a
    memory channel): most urgent first, EndOfStream once closed and drained."""

    async def receive(self) -> Lease: ...
    def receive_nowait(self) -> Lease: ...
    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Any: ...


class HandlerBook(Protocol):
    """What a handler actor uses of the lease book."""

    @property
    def leases(self) -> Mapping[int, Lease]: ...
    def forget(self, task_id: int, token: int) -> None: ...
    def finished(self, lease: Lease) -> None: ...
    def ran(self, task_type: str, seconds: float) -> None: ...


class HandlerWakeup(Protocol):
    """A freed slot of a backlogged type wakes the fetcher."""

    @property
    def backlogged(self) -> set[str]: ...
    def kick(self) -> None: ...


class HandlerStopping(Protocol):
    """Whether the shutdown has begun (read only)."""

    @property
    def stopping(self) -> bool: ...


class HandlerCounters(Protocol):
    """What a handler actor counts."""

    cancelled: int


class ProgressSinkBook(ProgressSink, Protocol):
    """The consumer's progress sink, which also hands a finished task's last report over."""

    def finish(self, task_id: int) -> Progress | None: ...


class RunTelemetry(Protocol):
    """A handler run's span and metrics."""

    def task_run(self, lease: Lease) -> TaskRun | QuietRun: ...


@dataclass(frozen=True, slots=True, eq=False)
class HandlerSettings:
    """One task type's handler actors' fixed settings."""

    chain: HandlerFn
    timeout: float | None
    policy: RetryPolicy
    error_handler: ErrorHandler | None
    message_limit: int
    result_limit: int = DEFAULT_RESULT_LIMIT
    #: Where `report_progress` calls of this type's handlers go (None: nowhere).
    progress: ProgressSinkBook | None = None


def build_chain(fn: HandlerFn, middleware: tuple[Middleware, ...]) -> HandlerFn:
    """Wrap ``fn`` so that ``middleware[0]`` is the outermost layer."""
    chain = fn
    for layer in reversed(middleware):
        chain = layer(chain)
    return chain


#: The most tasks an actor runs in a row under one cancel scope and without yielding to the
#: scheduler between them.  Taking a queued task needs no wait, and a checkpoint or a fresh
#: cancel scope per task costs more than a no-op handler; after this many, the actor waits on
#: its channel (a checkpoint: a stop reaches it there).
STREAK = 16


async def run_worker(
    settings: HandlerSettings,
    book: HandlerBook,
    wakeup: HandlerWakeup,
    stopping: HandlerStopping,
    counters: HandlerCounters,
    telemetry: RunTelemetry,
    receive: LeaseSource,
    outcomes: MemoryObjectSendStream[Outcome],
) -> None:
    """Take tasks from ``receive`` until it is closed and drained.

    Cancellation: a checkpoint between streaks; a cancelled handler's task is settled as its
    lease says (see the module docstring).
    """
    actor = _Actor(settings, book, wakeup, stopping, counters, telemetry, receive, outcomes)
    # Once for the actor's whole life (its task's own context): report_progress finds the
    # consumer's sink here, at no cost per task.
    CURRENT_SINK.set(settings.progress)
    async with receive, outcomes:
        while True:
            try:
                lease = await receive.receive()
            except anyio.EndOfStream:
                return
            await actor.streak(lease)


class _Actor:
    """One handler actor's fixed parts, and its streak loop."""

    def __init__(
        self,
        settings: HandlerSettings,
        book: HandlerBook,
        wakeup: HandlerWakeup,
        stopping: HandlerStopping,
        counters: HandlerCounters,
        telemetry: RunTelemetry,
        receive: LeaseSource,
        outcomes: MemoryObjectSendStream[Outcome],
    ) -> None:
        self.settings, self.book, self.wakeup, self.stopping = settings, book, wakeup, stopping
        self.counters, self.telemetry = counters, telemetry
        self.receive, self.outcomes = receive, outcomes
        self.chain, self.error_handler = settings.chain, settings.error_handler
        self.value: object = None  # what the last handler run returned
        self.reports = settings.error_handler is not None  # a final error goes somewhere
        self.timeout = math.inf if settings.timeout is None else settings.timeout
        # On Trio, trio's own cancel scope and clock: the hot path avoids anyio's wrappers.
        # Both scopes offer what the lease book and the outcome logic use: cancel(), a
        # settable deadline, cancel_called, cancelled_caught.
        on_trio = sniffio.current_async_library() == "trio"
        self.scope_type: Any = trio.CancelScope if on_trio else anyio.CancelScope
        self.clock = trio.current_time if on_trio else anyio.current_time

    async def streak(self, first: Lease) -> None:
        """Run ``first`` and up to `STREAK` - 1 tasks queued behind it under one cancel scope
        (recorded on the running task's lease, so a remote cancel or a lost lease cancels that
        handler alone).  Whatever needs a wait besides the handler (a full completer channel,
        the error handler, a cancelled run) ends the streak and is finished outside the scope.
        """
        scope = self.scope_type(deadline=self.clock() + self.timeout + DEADLINE_SLACK)
        lease: Lease | None = None  # the task taken, until it is finished
        run: TaskRun | QuietRun | None = None  # its handler run, until it is settled
        error: BaseException | None = None
        outcome: Outcome | None = None  # an outcome still to send
        final: BaseException | None = None  # an error still to report
        try:
            with scope:
                for n in range(STREAK):
                    lease = self._queued() if n else first  # take
                    if lease is None:
                        break
                    if self._dropped(lease):
                        lease = None
                        continue
                    if self.stopping.stopping:
                        outcome = Outcome(lease.task_id, lease.token, OutcomeKind.RELEASE)
                        break
                    started = self.clock()
                    deadline = deadline_after(scope.deadline, started, self.timeout)  # plan
                    if deadline is not None:
                        scope.deadline = deadline
                    run = self.telemetry.task_run(lease)
                    error = await self._run(lease, run, scope, started)  # run
                    self.book.ran(lease.type, self.clock() - started)  # the type's speed
                    if scope.cancel_called:
                        break  # cancelled, however it ended: settled outside the scope
                    outcome, final = self._settle(lease, run, error, cut_short=False)
                    run = None  # act: send, then report (outside the scope)
                    if outcome is not None and self._send_nowait(outcome):
                        outcome = None
                    if outcome is not None or (final is not None and self.reports):
                        break
                    self._finished(lease)
                    lease = None
            if lease is None:
                return
            if run is not None:
                outcome, final = self._settle(lease, run, error, cut_short=scope.cancel_called)
            if outcome is not None:
                await self._send(outcome)
            if final is not None and self.reports:
                await self._report(lease, final)
        finally:
            if lease is not None:
                self._finished(lease)

    async def _run(
        self, lease: Lease, run: TaskRun | QuietRun, scope: CancelScopeLike, started: float
    ) -> Exception | None:
        """Run the handler chain on ``lease``'s task under ``scope``; return what it raised."""
        info = lease.info
        assert info is not None  # the fetcher builds it with the lease
        lease.scope, lease.started = scope, started
        token = CURRENT_TASK.set(info)
        self.value = None
        try:
            with run:
                self.value = await self.chain(info)
        except Exception as exc:
            return exc
        finally:
            CURRENT_TASK.reset(token)
            lease.scope = None
        return None

    def _settle(
        self, lease: Lease, run: TaskRun | QuietRun, error: BaseException | None, *, cut_short: bool
    ) -> tuple[Outcome | None, BaseException | None]:
        """Settle a finished run (pure), then record it: the outcome to send (None: nothing)
        and the error to report."""
        settings = self.settings
        error = run_error(
            error, cut_short=cut_short, task_type=lease.type, timeout=settings.timeout
        )
        encoded = None
        if error is None and self.value is not None:
            try:
                encoded = encode_result(
                    self.value, limit=settings.result_limit, task_type=lease.type
                )
            except Exception as exc:  # ResultTooLarge, ResultNotSerializable: a failed attempt
                error = exc
        self.value = None
        progress = None if settings.progress is None else settings.progress.finish(lease.task_id)
        fate = settle(lease, error, policy=settings.policy, message_limit=settings.message_limit)
        if fate is Settled.LOST:
            self.counters.cancelled += 1
            run.cancelled()
            self.book.forget(lease.task_id, lease.token)
            return None, None
        if fate is Settled.RELEASED:
            run.released()
            return Outcome(lease.task_id, lease.token, OutcomeKind.RELEASE), None
        run.finish(fate, error, timed_out=cut_short)
        outcome = fate.outcome
        if outcome.kind is OutcomeKind.COMPLETE:
            if encoded is not None:
                outcome.result, outcome.codec = encoded
            outcome.progress = progress
        return outcome, fate.final_error

    async def _report(self, lease: Lease, error: BaseException) -> None:
        """Call the error handler for a task that failed for good (bounded by the timeout)."""
        assert self.error_handler is not None and lease.info is not None
        with anyio.move_on_after(self.timeout):
            try:
                await self.error_handler(lease.info, error)
            except Exception:
                logger.exception("error_handler raised for task %d", lease.task_id)

    def _queued(self) -> Lease | None:
        """The next queued task, taken without waiting (None: none, or the channel closed)."""
        try:
            return self.receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return None

    def _dropped(self, lease: Lease) -> bool:
        """Whether ``lease`` is no longer ours (lost before it started): then it is done."""
        if lease.lost or self.book.leases.get(lease.task_id) is not lease:
            self.book.forget(lease.task_id, lease.token)
            self._finished(lease)
            return True
        return False

    def _finished(self, lease: Lease) -> None:
        self.book.finished(lease)
        if lease.type in self.wakeup.backlogged:
            self.wakeup.kick()

    def _send_nowait(self, outcome: Outcome) -> bool:
        """Hand ``outcome`` to the completer if its channel has room (False: it has none)."""
        try:
            self.outcomes.send_nowait(outcome)
        except anyio.WouldBlock:
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            logger.warning("outcome of task %d dropped by a hard stop", outcome.task_id)
        return True

    async def _send(self, outcome: Outcome) -> None:
        if self._send_nowait(outcome):
            return
        # Shielded: an outcome, once decided, must reach the completer even during a hard
        # stop of this actor's scope; the completer channel is bounded, so this waits at most
        # until the completer takes it.
        with anyio.CancelScope(shield=True):
            try:
                await self.outcomes.send(outcome)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # Hard stop: the completer is gone.  The lease expires and the task is rescued.
                logger.warning("outcome of task %d dropped by a hard stop", outcome.task_id)
