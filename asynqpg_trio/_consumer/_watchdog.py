"""The watchdog: notices when the event loop stops running, and names the likely culprit.

Theory of operation
-------------------
A handler that blocks (``time.sleep``, CPU-bound work, blocking I/O) holds the whole event
loop: nothing else runs, lease renewal included, so this consumer's leases expire and other
consumers take its tasks over.  The watchdog sleeps a quarter of ``stall_threshold`` at a
time and compares when it woke with when it asked to: waking more than the threshold late
means the loop ran nothing else (or could not get to its timers) for at least that long.  It
then counts the stall and logs a warning with its length and the handlers that may have
caused it: those that started since its previous wake (a blocking step usually starts the
handler that blocks) and, apart, those already running (one may have resumed, then blocked).

It reads the event loop's clock, not ``time.monotonic``: under a virtual clock (Trio's
``autojump_clock`` in tests) time moves only when the loop jumps it and a sleep wakes exactly
when asked, so a test never sees a false alarm; under the real clock the loop's clock is the
monotonic clock, so a real stall shows.  Handler actors stamp each run's start on its lease
(`Lease.started`, a time they read anyway): the hot path pays nothing more.

Waits on: its own sleep.  Cancellation: stops at once; it holds nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .._core._book import Lease

__all__ = ["describe_stall", "run_watchdog"]

logger = logging.getLogger("asynqpg_trio.watchdog")

#: The most tasks a stall warning names one by one.
NAMED = 5


class WatchedBook(Protocol):
    """The leases held (their handlers' start times name the suspects)."""

    @property
    def leases(self) -> Mapping[int, Lease]: ...


class StallCounters(Protocol):
    """What the watchdog counts."""

    loop_stalls: int


class StallTelemetry(Protocol):
    """The metric of loop stalls."""

    def loop_stall(self) -> None: ...


async def run_watchdog(
    threshold: float, book: WatchedBook, counters: StallCounters, telemetry: StallTelemetry
) -> None:
    """Watch the event loop until cancelled.

    Cancellation: a checkpoint; it holds nothing.
    """
    tick = threshold / 4
    while True:
        previous = anyio.current_time()
        due = previous + tick
        await anyio.sleep_until(due)
        late = anyio.current_time() - due
        if late > threshold:
            counters.loop_stalls += 1
            telemetry.loop_stall()
            leases = list(book.leases.values())
            logger.warning("%s", describe_stall(late, threshold, leases, since=previous))


def describe_stall(late: float, threshold: float, leases: Iterable[Lease], *, since: float) -> str:
    """The warning for a stall of ``late`` seconds noticed after a wake at ``since``.

    ``leases`` are the held ones: those whose handler started at or after ``since`` are the
    suspects; those whose handler started before it and still runs are listed apart.
    """
    suspects: list[Lease] = []
    running: Counter[str] = Counter()
    for lease in leases:
        if lease.started >= since:
            suspects.append(lease)
        elif lease.scope is not None:
            running[lease.type] += 1
    # Latest first: the handler that blocks usually starts the step that blocks, the last
    # one the loop ran before the watchdog was due.
    suspects.sort(key=lambda lease: lease.started, reverse=True)
    named = ", ".join(f"{lease.type!r} (task {lease.task_id})" for lease in suspects[:NAMED])
    if len(suspects) > NAMED:
        named += f" and {len(suspects) - NAMED} more"
    text = (
        f"event loop stalled for at least {late:.2f} s (stall_threshold {threshold:g} s):"
        " nothing else ran meanwhile, lease renewal included; handlers started just before"
        f" or during it, latest first: {named or 'none'}"
    )
    if running:
        text += "; already running: " + ", ".join(
            f"{task_type!r} x{n}" for task_type, n in sorted(running.items())
        )
    return (
        text + ".  A handler must not block the event loop: run blocking or CPU-bound work"
        " with trio.to_thread.run_sync (or anyio.to_thread.run_sync)"
    )
