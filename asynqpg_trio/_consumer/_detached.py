"""A detached task: work its owner joins with a bound, and abandons when the bound passes.

Theory of operation
-------------------
Structured concurrency never abandons a task: a nursery's exit waits for every child, so a
handler that shields itself from cancellation (``with CancelScope(shield=True)``, or a
``move_on_after(..., shield=True)`` longer than the shutdown grace) would hold
`open_consumer`'s exit for as long as it likes, and nothing, not even a second signal, could
cut it short.  So the consumer runs its pipeline (the fetcher and the handler actors, one
ordinary nursery tree of their own) in one *detached* task outside its tree: a Trio system
task (`trio.lowlevel.spawn_system_task`), or a plain task on asyncio, with the caller's
context variables.  It is the one unstructured edge, and it is kept small:

* a *watcher* inside the consumer's tree waits for the detached task and re-raises its
  failure there, so a bug in the pipeline still tears the consumer down as before;
* at shutdown the consumer waits for it (`done`) within its bounds; once they pass (or when
  the tree is cut short) it leaves the ``with`` block of its handle, which cancels it, and
  stops waiting: the task is *abandoned*, cancelled, and ends whenever its
  last shielded handler does.  Whatever it held is left to the janitor: the leases are no
  longer renewed, expire, and their tasks are rescued (or taken over by a claim).

The detached task catches everything it raises (a system task must not raise); a
cancellation that ends it is not reported as a failure.

An abandoned Trio system task still holds ``trio.run`` at its end (Trio waits for its system
tasks), so a program that must end at the bound runs its event loop in a thread it can leave
behind: the ``worker`` command does.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, Self

import anyio
import sniffio
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Detached"]


class Detached:
    """One detached task: `start` it, `watch` it from inside the owner's tree, join it with
    `done` under a bound, `cancel` it (leaving ``with Detached(...) as work:`` does)."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Set when the task has ended, however it ended.
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self._scope = anyio.CancelScope()
        self._task: asyncio.Task[None] | None = None  # keeps an asyncio task referenced

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()  # abandon whatever still runs

    def start(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``fn(*args)`` outside the caller's task tree (not a checkpoint)."""
        context = contextvars.copy_context()
        if sniffio.current_async_library() == "trio":
            trio.lowlevel.spawn_system_task(self._run, fn, *args, name=self.name, context=context)
        else:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(fn, *args), name=self.name, context=context)

    async def _run(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            with self._scope:
                await fn(*args)
        except BaseException as exc:  # reported by watch(); a system task must not raise
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self.error = exc
        finally:
            self.done.set()

    async def watch(self) -> None:
        """Wait for the task to end; raise what it raised (from inside the owner's tree).

        Cancellation: a checkpoint; cancelling the watcher does not touch the task.
        """
        await self.done.wait()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Cancel the task (it ends at its next checkpoint, or when its shields end)."""
        self._scope.cancel()
