"""The ``worker`` command's event loop in a thread of its own, and its stop signals.

Theory of operation
-------------------
A consumer's shutdown is bounded even when a handler ignores cancellation: it abandons the
detached pipeline (see `_shutdown`).  But an abandoned Trio system task still holds
``trio.run`` at its end (Trio waits for its system tasks), and a handler that blocks holds the
event loop itself; neither may hold the worker *process*.  So `run_in_thread` runs the loop in
a daemon thread and keeps the main thread for the signals and the exit:

* the main thread takes SIGINT/SIGTERM (the loop's thread blocks them) and hands them to the
  loop through ``TrioToken.run_sync_soon``, which a signal handler may call; signals that
  come before the loop is ready wait for it.  In the loop, `stop_signals` reads them (and
  falls back to ``trio.open_signal_receiver`` when the loop runs in the main thread);
* the loop reports its outcome (an exit status, or the exception it raises) before
  ``trio.run`` returns; the main thread then gives the loop's thread `JOIN_GRACE` seconds to
  end and returns the status, leaving the thread behind if an abandoned handler holds it;
* after the second signal the main thread waits at most `STOP_NOW_GRACE` seconds for that
  report (a loop blocked by a handler never sends it) and then returns `LEFT_TO_JANITOR`.

Leaving the thread behind is an interpreter exit with a daemon thread still running: its
sockets close with the process, the database rolls back what was open, and the tasks whose
leases it held are rescued once the leases expire.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["JOIN_GRACE", "LEFT_TO_JANITOR", "STOP_NOW_GRACE", "run_in_thread", "stop_signals"]

#: The ``worker`` exit status when its stop left tasks to the janitor: their rows stay running
#: until the leases expire, then they are rescued.
LEFT_TO_JANITOR = 3
#: Seconds the main thread waits after the second signal for the loop to report its stop
#: before it ends the process anyway (a handler may be blocking the event loop).
STOP_NOW_GRACE = 2.0
#: Seconds the main thread waits for the loop's thread once the loop reported (it ends at
#: once unless an abandoned handler still holds ``trio.run``).
JOIN_GRACE = 0.5

_STOP = (signal.SIGINT, signal.SIGTERM)
_BRIDGE: ContextVar[_Bridge | None] = ContextVar("asynqpg_trio_cli_bridge", default=None)


class _Bridge:
    """Between the main thread (signals, the exit) and the loop's thread.

    ``reports`` wakes the main thread: ("signal", count), ("done", status), ("error", exc).
    """

    def __init__(self) -> None:
        self.reports: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.pending: list[int] = []
        self.count = 0
        self.token: trio.lowlevel.TrioToken | None = None
        self.send: trio.MemorySendChannel[int] | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The main thread's SIGINT/SIGTERM handler."""
        self.count += 1
        self.reports.put(("signal", self.count))  # SimpleQueue.put is reentrant
        self.pending.append(signum)
        token = self.token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self.drain)

    def attach(self, send: trio.MemorySendChannel[int]) -> None:
        """In the loop: from now on signals go to ``send``."""
        self.send = send
        self.token = trio.lowlevel.current_trio_token()
        self.drain()

    def drain(self) -> None:
        """In the loop: pass the signals received so far on."""
        gone = (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError)
        while self.pending and self.send is not None:
            with contextlib.suppress(*gone):
                self.send.send_nowait(self.pending.pop(0))


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[AsyncIterator[int]]:
    """The SIGINT/SIGTERM signals, as ``trio.open_signal_receiver`` gives them.

    Cancellation: entering and leaving are not checkpoints.
    """
    bridge = _BRIDGE.get()
    if bridge is None:  # the loop runs in the main thread
        with trio.open_signal_receiver(*_STOP) as received:
            yield received
        return
    send, signals = trio.open_memory_channel[int](8)
    async with send, signals:
        bridge.attach(send)
        yield signals


def run_in_thread(async_fn: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(async_fn, *args)`` in a daemon thread; return its exit status, or
    `LEFT_TO_JANITOR` when a second signal got no answer in `STOP_NOW_GRACE` seconds.

    Raises what ``async_fn`` raised.  Must be called in the main thread.
    """
    bridge = _Bridge()

    async def reporting() -> int:
        _BRIDGE.set(bridge)
        try:
            status = await async_fn(*args)
        except BaseException as exc:
            bridge.reports.put(("error", exc))
            raise
        bridge.reports.put(("done", status))
        return status

    def loop() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)  # signals go to the main thread
        try:  # (what `reporting` reported already, the main thread does not read again)
            status = trio.run(reporting)
        except BaseException as exc:
            bridge.reports.put(("error", exc))
        else:
            bridge.reports.put(("done", status))

    previous = {sig: signal.signal(sig, bridge.on_signal) for sig in _STOP}
    thread = threading.Thread(target=loop, name="asynqpg-trio worker loop", daemon=True)
    try:
        thread.start()
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = bridge.reports.get(timeout=timeout)
            except queue.Empty:
                print(
                    f"the worker did not stop within {STOP_NOW_GRACE:g} s of the second signal"
                    " (a handler blocking its event loop?): exiting; its tasks are left to the"
                    " janitor",
                    file=sys.stderr,
                )
                return LEFT_TO_JANITOR
            if kind == "signal":
                if value >= 2 and deadline is None:
                    deadline = time.monotonic() + STOP_NOW_GRACE
                continue
            if kind == "error":
                raise value
            thread.join(JOIN_GRACE)  # at once, unless an abandoned handler holds the loop
            return int(value)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
