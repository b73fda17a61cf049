"""The progress writer: stores handlers' `report_progress` calls, throttled.

Theory of operation
-------------------
`ConsumerProgress` is the sink every handler actor hands to `report_progress` (through a
context variable, see ``_core/_progress``): it records a report in the pure `ProgressBook`
under the task's current lease token, and wakes the writer.  A report from a sync handler's
worker thread wakes it through the event loop's thread-safe call (Trio's ``run_sync_soon``,
asyncio's ``call_soon_threadsafe``); a report for a task this consumer no longer holds is
dropped.

`run_progress_writer` waits for a wake-up (an event, never a polled flag), then writes every
report whose task's interval has passed in one fenced statement, sleeps until the next one
falls due, and so on until nothing is dirty.  So a task gets at most one write per
`PROGRESS_INTERVAL`, and a handler calling `report_progress` in a tight loop costs the
database nothing more.  The last report before a handler returns is written by the completion
itself (the handler actor takes it with `ConsumerProgress.finish`), so the throttle never
loses it.

A transient database error drops that round's reports (progress is advisory; the next
report, or the completion, writes a newer value) and is logged.  Cancellation: stops at
once; reports not yet written are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Protocol

import anyio
import sniffio
import trio

from .._core._progress import PROGRESS_INTERVAL, Progress, ProgressBook
from .._pg._errors import TRANSIENT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._core._book import Lease

__all__ = ["ConsumerProgress", "run_progress_writer"]

logger = logging.getLogger("asynqpg_trio.progress")


class ProgressRepository(Protocol):
    """What the writer needs of the tasks repository."""

    async def write_progress(self, reports: Sequence[tuple[int, int, Progress]]) -> set[int]: ...


def _loop_caller() -> Callable[[Callable[[], object]], object]:
    """The running event loop's thread-safe "call this soon" (Trio or asyncio)."""
    if sniffio.current_async_library() == "trio":
        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


class ConsumerProgress:
    """The consumer's progress sink: a `ProgressBook` over the leases it holds.

    Make it inside the consumer's event loop (it remembers the loop's thread).
    """

    def __init__(self, leases: Mapping[int, Lease], interval: float = PROGRESS_INTERVAL) -> None:
        self.book: ProgressBook = ProgressBook(interval)
        self._leases = leases
        self._thread = threading.get_ident()
        self._call_soon: Callable[[Callable[[], object]], object] = _loop_caller()
        self._dirty = anyio.Event()
        #: Statements the writer ran (for tests and statistics).
        self.writes: int = 0

    def report(self, task_id: int, progress: Progress) -> bool:
        """Record a report for a task this consumer holds (False: it holds none)."""
        lease = self._leases.get(task_id)
        if lease is None or lease.lost:
            return False
        self.book.report(task_id, lease.token, progress)
        if threading.get_ident() == self._thread:
            self._dirty.set()
        else:
            try:
                self._call_soon(self._wake)
            except RuntimeError:  # the loop has ended: nothing will write it
                return False
        return True

    def _wake(self) -> None:
        self._dirty.set()

    def finish(self, task_id: int) -> Progress | None:
        """The task's last report (None: none), forgotten by the book."""
        return self.book.finish(task_id)

    async def dirty(self) -> None:
        """Wait until a report comes in (then the next wait needs a new one)."""
        await self._dirty.wait()
        self._dirty = anyio.Event()


async def run_progress_writer(progress: ConsumerProgress, tasks: ProgressRepository) -> None:
    """Write reports as they come in, throttled (see the module docstring); runs until
    cancelled.

    Cancellation: a checkpoint; reports not yet written are dropped.
    """
    while True:
        await progress.dirty()
        while True:
            reports, later = progress.book.due(anyio.current_time())
            if reports:
                try:
                    await tasks.write_progress(reports)
                    progress.writes += 1
                except TRANSIENT as ex:
                    logger.warning("progress of %d tasks not written: %s", len(reports), ex)
            if later is None:
                break
            await anyio.sleep_until(later)
