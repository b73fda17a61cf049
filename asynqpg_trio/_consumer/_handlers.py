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

The run's end is turned into an outcome by the pure `decide` and sent to the completer's
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
from typing import TYPE_CHECKING, Any

import anyio
import sniffio
import trio

from .._core._batching import Outcome, OutcomeKind
from .._core._metadata import CURRENT_TASK
from .._core._outcome import decide

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._core._book import Lease
    from .._core._config import Handler, HandlerFn, Middleware
    from .._telemetry._telemetry import QuietRun, TaskRun
    from ._runtime import Runtime

__all__ = ["build_chain", "run_worker"]

logger = logging.getLogger("asynqpg_trio.handlers")


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
#: Within a streak, a task's deadline may fall up to this much (seconds) after its start plus
#: the handler timeout, never before: the scope's deadline moves (to that much after) only when
#: it would otherwise end the task early, so most tasks of a quick streak do not move it.
DEADLINE_SLACK = 0.001


async def run_worker(
    rt: Runtime,
    handler: Handler,
    chain: HandlerFn,
    receive: MemoryObjectReceiveStream[Lease],
    outcomes: MemoryObjectSendStream[Outcome],
) -> None:
    """Take tasks from ``receive`` until it is closed and drained."""
    actor = _Actor(rt, handler, chain, receive, outcomes)
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
        rt: Runtime,
        handler: Handler,
        chain: HandlerFn,
        receive: MemoryObjectReceiveStream[Lease],
        outcomes: MemoryObjectSendStream[Outcome],
    ) -> None:
        self.rt, self.handler, self.chain = rt, handler, chain
        self.receive, self.outcomes = receive, outcomes
        # On Trio, trio's own cancel scope and clock: the hot path avoids anyio's wrappers.
        # Both scopes offer what the lease book and the outcome logic use: cancel(), a
        # settable deadline, cancel_called, cancelled_caught.
        on_trio = sniffio.current_async_library() == "trio"
        self.scope_type: Any = trio.CancelScope if on_trio else anyio.CancelScope
        self.clock = trio.current_time if on_trio else anyio.current_time

    async def streak(self, first: Lease) -> None:
        """Run ``first`` and up to `STREAK` - 1 tasks already queued behind it, under one
        cancel scope whose deadline moves to each task's.

        The scope is the running task's: the lease records it while the handler runs, so a
        remote cancel or a lost lease cancels that handler alone.  Whatever needs a wait
        besides the handler (a full completer channel, the error handler, a cancelled run)
        ends the streak and is finished outside the scope.
        """
        rt, handler = self.rt, self.handler
        timeout = math.inf if handler.timeout is None else handler.timeout
        scope = self.scope_type(deadline=self.clock() + timeout + DEADLINE_SLACK)
        current: Lease | None = None  # the task being run, until it is finished
        run: TaskRun | QuietRun | None = None  # its handler run, once started
        error: BaseException | None = None
        todo: Outcome | None = None  # an outcome still to send
        final: BaseException | None = None  # an error still to report
        try:
            with scope:
                for n in range(STREAK):
                    lease = self._queued() if n else first
                    if lease is None:
                        break
                    current, run, error = lease, None, None
                    if lease.lost or rt.book.leases.get(lease.task_id) is not lease:
                        rt.book.forget(lease.task_id, lease.token)
                        current = None
                        self._finished(lease)
                        continue
                    if rt.stopping:
                        todo = Outcome(lease.task_id, lease.token, OutcomeKind.RELEASE)
                        break
                    info = lease.info
                    assert info is not None  # the fetcher builds it with the lease
                    started = self.clock()
                    deadline = started + timeout
                    if scope.deadline < deadline:  # moving it costs more than a no-op task
                        scope.deadline = deadline + DEADLINE_SLACK
                    run = rt.telemetry.task_run(lease)
                    lease.scope, lease.started = scope, started
                    token = CURRENT_TASK.set(info)
                    try:
                        with run:
                            await self.chain(info)
                    except Exception as exc:
                        error = exc
                    finally:
                        CURRENT_TASK.reset(token)
                        lease.scope = None
                    if scope.cancel_called:
                        break  # cancelled, however it ended: settled outside the scope
                    todo, final = _settle(rt, handler, lease, run, error, scope)
                    run = None
                    if todo is not None and not _send_nowait(rt, self.outcomes, todo):
                        break
                    todo = None
                    if final is not None and rt.error_handler is not None:
                        break
                    current = None
                    self._finished(lease)
            if current is None:
                return
            if run is not None:
                todo, final = _settle(rt, handler, current, run, error, scope)
            if todo is not None:
                await _send(rt, self.outcomes, todo)
            if final is not None and rt.error_handler is not None and current.info is not None:
                with anyio.move_on_after(timeout):
                    try:
                        await rt.error_handler(current.info, final)
                    except Exception:
                        logger.exception("error_handler raised for task %d", current.task_id)
        finally:
            if current is not None:
                self._finished(current)

    def _queued(self) -> Lease | None:
        """The next queued task, taken without waiting (None: none, or the channel closed)."""
        try:
            return self.receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return None

    def _finished(self, lease: Lease) -> None:
        self.rt.book.finished(lease.type)
        if lease.type in self.rt.backlogged:
            self.rt.kick()


def _settle(
    rt: Runtime,
    handler: Handler,
    lease: Lease,
    run: TaskRun | QuietRun,
    error: BaseException | None,
    scope: Any,
) -> tuple[Outcome | None, BaseException | None]:
    """What a finished handler run writes (None: nothing), and the error to report."""
    if lease.is_lost():
        # Cancelled by a client or taken over: the row already says so; write nothing.
        rt.counts["cancelled"] += 1
        run.cancelled()
        rt.book.forget(lease.task_id, lease.token)
        return None, None
    # Whether this run was cut short: the scope is cancelled only while this task runs (a
    # streak stops at the first cancelled task) and its deadline is never before this
    # task's own, so a cancel called means the cancel was for this task.  Keyed on the call,
    # not on the scope catching the Cancelled: a handler may swallow it (or raise something
    # else instead), and its work still did not finish.
    cut_short = scope.cancel_called
    if lease.released:
        # Cut short by the end of the shutdown grace, however it ended: no attempt used.
        run.released()
        return Outcome(lease.task_id, lease.token, OutcomeKind.RELEASE), None
    if cut_short:
        # Only the deadline is left to have cancelled it: a timeout is a failed attempt,
        # whatever the handler did with the cancellation.
        limit = math.inf if handler.timeout is None else handler.timeout
        error = TimeoutError(f"handler for {lease.type!r} timed out after {limit:g} s")
    decision = decide(
        lease.task_id,
        lease.token,
        error,
        attempts_left=lease.attempts_left,
        attempt=lease.attempts_elapsed,
        policy=rt.policy,
        message_limit=rt.config.message_limit,
    )
    run.finish(decision, error, timed_out=cut_short)
    return decision.outcome, decision.final_error


def _send_nowait(rt: Runtime, outcomes: MemoryObjectSendStream[Outcome], outcome: Outcome) -> bool:
    """Hand ``outcome`` to the completer if its channel has room (False: it has none)."""
    try:
        outcomes.send_nowait(outcome)
    except anyio.WouldBlock:
        return False
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        logger.warning("outcome of task %d dropped by a hard stop", outcome.task_id)
        return True
    rt.pending_writes += 1
    return True


async def _send(rt: Runtime, outcomes: MemoryObjectSendStream[Outcome], outcome: Outcome) -> None:
    if _send_nowait(rt, outcomes, outcome):
        return
    rt.pending_writes += 1
    # Shielded: an outcome, once decided, must reach the completer even during a hard stop
    # of this actor's scope; the completer channel is bounded, so this waits at most until
    # the completer takes it.
    with anyio.CancelScope(shield=True):
        try:
            await outcomes.send(outcome)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # Hard stop: the completer is gone.  The lease expires and the task is rescued.
            rt.pending_writes -= 1
            logger.warning("outcome of task %d dropped by a hard stop", outcome.task_id)
