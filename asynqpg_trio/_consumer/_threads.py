"""Sync handlers: a plain function run in a worker thread, at most N threads per task type.

Theory of operation
-------------------
`runnable` gives the handler actors an async function for every handler: an async one as it
is, a sync one wrapped in `InThreads`, so the actors, the middleware, the timeout and the
settle rules are the same for both.  Each call of the wrapper:

1. takes a slot of the type's limiter (``Handler.thread_limit`` tokens, borrowed on behalf of
   the call): a checkpoint inside the task's cancel scope, so waiting for a slot counts
   towards the handler's timeout;
2. runs the function in an anyio worker thread (``to_thread.run_sync`` with
   ``abandon_on_cancel=True``, and an unbounded limiter of its own, so anyio's default
   limiter, shared with the application, plays no part), with a copy of the caller's context
   variables: `get_task_metadata` works in the thread;
3. returns what the function returned or raises what it raised.  A returned awaitable is a
   programming error (a ``lambda`` around an async function): it is closed and the call
   raises `TypeError` caused by `SkipRetry`, so the task fails at once, no retry.

Cancellation (the timeout, a remote cancel, a lost lease, the end of the shutdown grace) ends
the call at once: the actor settles the attempt as it settles any handler's, and the thread is
*abandoned*: it runs until the function returns, and its result is discarded.  Nothing waits
for it, so shutdown stays bounded.

The slot is released when the thread ends, not when the call does, so a type never runs more
threads than its limit, abandoned ones included (anyio's own limiter would behave differently
on each backend: Trio releases it when the thread ends, asyncio when the call is cancelled).
Exactly one side releases it, decided under a lock (`_Borrow`): the caller, when the thread
has ended by the time the call ends; otherwise the thread, at its end, by scheduling the
release on the event loop without waiting (Trio's ``run_sync_soon``, asyncio's
``call_soon_threadsafe``).  If the loop has ended by then, there is nothing left to release.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import threading
from typing import TYPE_CHECKING, Any, cast, final

import anyio
import sniffio
import trio

from .._core._outcome import SkipRetry

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._config import Handler, HandlerFn, SyncHandlerFn
    from .._core._task import TaskInfo

__all__ = ["InThreads", "call_sync", "runnable"]

logger = logging.getLogger("asynqpg_trio.handlers")


def runnable(task_type: str, handler: Handler) -> HandlerFn:
    """The async function the handler actors run for ``handler``: its own function if it is
    async, else an `InThreads` of it (with a limiter of its own: make one per consumer run)."""
    if not handler.is_sync:
        return cast("HandlerFn", handler.fn)
    return InThreads(handler.fn, task_type, handler.thread_limit)


@final
class InThreads:
    """An async function that runs a sync handler in a worker thread, at most ``limit``
    threads at once, abandoned ones included (see the module docstring).

    Attributes:
        slots: the type's thread slots (``borrowed_tokens`` are the threads running).
    """

    def __init__(self, fn: SyncHandlerFn, task_type: str, limit: int) -> None:
        self.fn, self.task_type, self.limit = fn, task_type, limit
        self.slots = anyio.CapacityLimiter(limit)
        self._unbounded = anyio.CapacityLimiter(math.inf)

    async def __call__(self, task: TaskInfo) -> Any:
        """Run the sync handler on ``task`` in a worker thread; return what it returns.

        Cancellation: a checkpoint while waiting for a slot and while the thread runs;
        cancelled, the thread is abandoned (it keeps its slot until it ends).
        """
        borrow = _Borrow(self.slots, _loop_caller())
        await self.slots.acquire_on_behalf_of(borrow)
        try:
            return await anyio.to_thread.run_sync(
                _call,
                self.fn,
                task,
                self.task_type,
                borrow,
                abandon_on_cancel=True,
                limiter=self._unbounded,
            )
        finally:
            if borrow.caller_left():
                borrow.release()
            else:
                logger.warning(
                    "task %d: its %r handler thread is abandoned, still running; it keeps one"
                    " of the type's %d thread slots until it returns",
                    task.id,
                    self.task_type,
                    self.limit,
                )


def _call(fn: SyncHandlerFn, task: TaskInfo, task_type: str, borrow: _Borrow) -> object:
    """In the worker thread: run the handler (unless the caller left before the thread
    started); hand the slot back if the caller has left by the time it returns."""
    if not borrow.thread_started():
        return None  # the attempt is over, and the caller has released the slot
    try:
        return call_sync(fn, task, task_type)
    finally:
        if borrow.thread_ended():
            borrow.release_soon()


def call_sync(fn: SyncHandlerFn, task: TaskInfo, task_type: str) -> object:
    """Call a sync handler here and now; return what it returns.

    Raises:
        TypeError: it returned an awaitable (closed, never awaited), caused by `SkipRetry`:
            the task fails at once.
    """
    result = fn(task)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited, on purpose: no warning
        raise TypeError(
            f"the handler for {task_type!r} is a plain function but returned"
            f" {type(result).__name__}, an awaitable: make it `async def` so that the"
            " consumer awaits it on the event loop"
        ) from SkipRetry("a sync handler returned an awaitable")
    return result


def _loop_caller() -> Callable[[Callable[[], object]], object]:
    """How a thread schedules a call on the current event loop without waiting for it."""
    if sniffio.current_async_library() == "trio":
        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


class _Borrow:
    """One call's slot, released once: by the caller if the thread ended first (or never
    started), else by the thread when it ends (see the module docstring)."""

    __slots__ = ("_caller_left", "_lock", "_soon", "_thread_ended", "_thread_started", "slots")

    def __init__(
        self, slots: anyio.CapacityLimiter, soon: Callable[[Callable[[], object]], object]
    ) -> None:
        self.slots = slots
        self._soon = soon
        self._lock = threading.Lock()
        self._thread_started = False
        self._thread_ended = False
        self._caller_left = False

    def caller_left(self) -> bool:
        """On the loop, as the call ends: whether the caller releases (the thread ended, or
        never started: cancelled before it, it will not run the handler)."""
        with self._lock:
            self._caller_left = True
            return self._thread_ended or not self._thread_started

    def thread_started(self) -> bool:
        """In the thread, first: whether to run the handler (the caller is still there)."""
        with self._lock:
            if self._caller_left:
                return False
            self._thread_started = True
            return True

    def thread_ended(self) -> bool:
        """In the thread, as it ends: whether it releases (the caller has left)."""
        with self._lock:
            self._thread_ended = True
            return self._caller_left

    def release(self) -> None:
        """Hand the slot back (on the event loop)."""
        self.slots.release_on_behalf_of(self)

    def release_soon(self) -> None:
        """From the thread: hand the slot back on the event loop, without waiting."""
        # RuntimeError: the event loop has ended, and there is no slot left to free.
        with contextlib.suppress(RuntimeError):
            self._soon(self.release)
