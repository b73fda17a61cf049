"""Handler actors: run one task at a time under its own cancel scope, report its outcome.

Theory of operation
-------------------
Each registered type has ``workers`` actors reading from the type's memory channel.  For each
task an actor builds the `TaskInfo`, sets the task metadata context variable and runs the
middleware chain and handler inside a cancel scope with the type's timeout as deadline.  The
scope is recorded on the task's lease, so the lease keeper and the listener can cancel it when
the task is cancelled remotely or its lease is lost.

The run's end is turned into an outcome by the pure `decide` and sent to the completer's
channel (bounded: a slow completer blocks handlers, which stops the fetcher claiming).
Exceptions from handlers never escape; they are outcomes.

Shutdown: once the consumer is stopping, an actor releases (back to pending, no attempt used)
every task it receives instead of starting it; a running handler whose scope is cancelled at
the end of the shutdown grace is released too.  A lost lease writes nothing: the row already
says what happened (cancelled, or taken over).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import sniffio
import trio

from ._batching import Outcome, OutcomeKind
from ._metadata import CURRENT_TASK, TaskMetadata
from ._outcome import decide
from ._task import TaskInfo

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._book import Claimed
    from ._config import Handler, HandlerFn, Middleware
    from ._context import Runtime

__all__ = ["build_chain", "run_worker"]

logger = logging.getLogger("asynqpg_trio.handlers")


def build_chain(fn: HandlerFn, middleware: tuple[Middleware, ...]) -> HandlerFn:
    """Wrap ``fn`` so that ``middleware[0]`` is the outermost layer."""
    chain = fn
    for layer in reversed(middleware):
        chain = layer(chain)
    return chain


def _scope(timeout: float) -> Any:
    """A cancel scope with a deadline ``timeout`` seconds away.

    On Trio, trio's own scope: the per-task hot path avoids anyio's wrapper.  Both kinds offer
    what the lease book and the outcome logic use: cancel(), cancel_called, cancelled_caught.
    """
    if sniffio.current_async_library() == "trio":
        return trio.CancelScope(deadline=trio.current_time() + timeout)
    return anyio.CancelScope(deadline=anyio.current_time() + timeout)


def _info(claimed: Claimed) -> TaskInfo:
    # The stored counters already count this attempt; handlers see the Go library's view.
    return TaskInfo(
        id=claimed.id,
        type=claimed.type,
        payload=claimed.payload,
        idempotency_token=claimed.idempotency_token,
        attempts_left=claimed.attempts_left + 1,
        attempts_elapsed=max(claimed.attempts_elapsed - 1, 0),
        created_at=claimed.created_at,
        attempted_at=claimed.attempted_at,
        messages=claimed.messages,
    )


async def run_worker(
    rt: Runtime,
    handler: Handler,
    chain: HandlerFn,
    receive: MemoryObjectReceiveStream[Claimed],
    outcomes: MemoryObjectSendStream[Outcome],
) -> None:
    """Take tasks from ``receive`` until it is closed and drained."""
    async with receive, outcomes:
        async for claimed in receive:
            try:
                await _run_one(rt, handler, chain, claimed, outcomes)
            finally:
                rt.book.finished(claimed.type)
                if claimed.type in rt.backlogged:
                    rt.kick()


async def _run_one(
    rt: Runtime,
    handler: Handler,
    chain: HandlerFn,
    claimed: Claimed,
    outcomes: MemoryObjectSendStream[Outcome],
) -> None:
    lease = rt.book.leases.get(claimed.id)
    if lease is None or lease.lost:
        rt.book.forget(claimed.id, claimed.lease_token)
        return
    if rt.stopping:
        await _send(rt, outcomes, Outcome(claimed.id, claimed.lease_token, OutcomeKind.RELEASE))
        return
    info = _info(claimed)
    meta = TaskMetadata(
        id=info.id,
        retry_count=info.attempts_elapsed,
        max_retry=info.attempts_elapsed + info.attempts_left,
        created_at=info.created_at,
    )
    error: BaseException | None = None
    run = rt.telemetry.task_run(claimed)
    with _scope(handler.timeout) as scope:
        lease.scope = scope
        token = CURRENT_TASK.set(meta)
        try:
            with run:
                await chain(info)
        except Exception as exc:
            error = exc
        finally:
            CURRENT_TASK.reset(token)
            lease.scope = None
    if lease.is_lost():
        # Cancelled by a client or taken over: the row already says so; write nothing.
        rt.counts["cancelled"] += 1
        run.cancelled()
        rt.book.forget(claimed.id, claimed.lease_token)
        return
    if lease.released and (error is not None or scope.cancelled_caught):
        # Cut short by the end of the shutdown grace, however it ended: no attempt used.
        run.released()
        await _send(rt, outcomes, Outcome(claimed.id, claimed.lease_token, OutcomeKind.RELEASE))
        return
    if scope.cancel_called and error is None and scope.cancelled_caught:
        error = TimeoutError(f"handler for {claimed.type!r} timed out after {handler.timeout:g} s")
    decision = decide(
        claimed.id,
        claimed.lease_token,
        error,
        attempts_left=claimed.attempts_left,
        attempt=claimed.attempts_elapsed,
        policy=rt.policy,
        message_limit=rt.config.message_limit,
    )
    run.finish(decision, error, timed_out=scope.cancelled_caught)
    await _send(rt, outcomes, decision.outcome)
    if decision.final_error is not None and rt.error_handler is not None:
        with anyio.move_on_after(handler.timeout):
            try:
                await rt.error_handler(info, decision.final_error)
            except Exception:
                logger.exception("error_handler raised for task %d", claimed.id)


async def _send(rt: Runtime, outcomes: MemoryObjectSendStream[Outcome], outcome: Outcome) -> None:
    rt.pending_writes += 1
    try:  # the fast path: the completer's channel has room
        outcomes.send_nowait(outcome)
        return
    except anyio.WouldBlock:
        pass
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        rt.pending_writes -= 1
        logger.warning("outcome of task %d dropped by a hard stop", outcome.task_id)
        return
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
