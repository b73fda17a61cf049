"""The consumer's shutdown: the sequence, its bound, and what it leaves to the janitor.

Theory of operation
-------------------
Shutdown, when the ``async with`` block ends (normally, by an exception or by cancellation):

1. stop claiming (the fetcher is cancelled and closes the task channels; a claim already sent
   still comes back, and its tasks are released with the buffered ones);
2. handler actors release the tasks still buffered (back to pending, no attempt used) and
   in-flight handlers get ``shutdown_timeout`` seconds to finish;
3. handlers still running are cancelled and their tasks released too;
4. the completer writes every outcome: within ``flush_timeout`` the pipeline must end (the
   cancelled handlers with it) and the completer drain;
5. the rest (lease keeper, listener, maintenance) stops; maintenance resigns leadership.

The whole sequence runs shielded (a cancelled host still shuts down gracefully) and bounded:
``shutdown_timeout + flush_timeout`` (plus a little).  A handler that ignores cancellation
(it shields itself) cannot be stopped, and structured concurrency cannot leave it behind;
that is why the pipeline is detached.  Once the bound passes, or at once after
`Consumer.stop_now`, the consumer cancels the pipeline and stops waiting for it: the detached
task is abandoned and ends whenever its shielded handlers do (their outcomes are dropped).
Every task whose lease the consumer still holds then is *left to the janitor*: its row stays
``running`` until the lease, no longer renewed, expires, and the janitor rescues it (or a
claim takes it over), an attempt used.  Nothing is lost.  The shutdown logs how many tasks it
left so, and `ConsumerStatistics.abandoned` counts them: the ``worker`` command exits
non-zero when it is not 0.  (An abandoned Trio system task still delays the end of
``trio.run``: the ``worker`` command runs its loop in a thread it can leave behind.)

Waits on: the detached pipeline's end and the completer's (events), never a polled flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ._detached import Detached
    from ._runtime import Runtime

__all__ = ["StopControl", "Tree", "report_left", "shut_down"]

logger = logging.getLogger("asynqpg_trio.consumer")

#: Seconds the shutdown may take beyond ``shutdown_timeout + flush_timeout``.
MARGIN = 5.0


@dataclass(eq=False)
class StopControl:
    """A consumer's stop requests, and the scope of the shutdown in progress."""

    requested: anyio.Event = field(default_factory=anyio.Event)
    now: bool = False  # stop_now was called: the shutdown is (or starts) cut short
    scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        """Ask for a graceful shutdown."""
        self.requested.set()

    def stop_now(self) -> None:
        """Cut the shutdown short, whether it has begun or not."""
        self.requested.set()
        self.now = True
        if self.scope is not None:
            self.scope.cancel()


@dataclass(frozen=True, slots=True)
class Tree:
    """What shutdown acts on: the tree's scope, the fetcher's, the detached pipeline, and the
    completer's end."""

    scope: anyio.CancelScope
    fetcher_scope: anyio.CancelScope
    pipeline: Detached
    completer_done: anyio.Event


async def shut_down(rt: Runtime, control: StopControl, tree: Tree) -> None:
    """The graceful shutdown sequence (see the module docstring), shielded and bounded.

    Cancellation: shielded; returns within ``shutdown_timeout + flush_timeout + MARGIN``, at
    once after `StopControl.stop_now`.
    """
    config = rt.config
    pipeline = tree.pipeline
    with anyio.CancelScope(shield=True) as stop_scope:
        control.scope = stop_scope
        stop_scope.deadline = (
            anyio.current_time() + config.shutdown_timeout + config.flush_timeout + MARGIN
        )
        if control.now:  # stop_now came before the shutdown began
            stop_scope.cancel()
        rt.stopping = True
        tree.fetcher_scope.cancel()  # 1. stop claiming; the task channels close
        # The pipeline ends once the fetcher has stopped (a claim in flight comes back and
        # its tasks are released) and every handler actor has exited.
        with anyio.move_on_after(config.shutdown_timeout):
            await pipeline.done.wait()  # 2. let in-flight handlers finish
        rt.book.release_running()  # 3. cancel the rest; they release their tasks
        with anyio.move_on_after(config.flush_timeout):  # 4. every outcome written
            await pipeline.done.wait()
            await tree.completer_done.wait()
    # Past the bound, or cut short by stop_now: stop waiting for the pipeline.  A handler
    # that ignores cancellation runs on, detached; its task is left to the janitor.
    pipeline.cancel()


def report_left(rt: Runtime) -> None:
    """Count (``abandoned``) and log the tasks whose lease the consumer still holds at its
    end: left to the janitor."""
    left = len(rt.book.leases)
    rt.counts["abandoned"] = left
    if not left:
        return
    stuck = sum(1 for lease in rt.book.leases.values() if lease.scope is not None)
    logger.warning(
        "shutdown: %d task%s left to the janitor (%d still in a handler that ignored"
        " cancellation, %d outcomes not written): they stay running under this consumer's"
        " lease until it expires (lease_duration %g s), then they are rescued",
        left,
        "" if left == 1 else "s",
        stuck,
        rt.pending_writes,
        rt.config.lease_duration,
    )
