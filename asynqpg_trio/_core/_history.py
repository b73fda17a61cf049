"""A task's history as one timeline, in order, with times; and a message's headline (pure).

Theory of operation
-------------------
The row keeps a task's history in pieces: ``created_at``; one message per failed attempt
(the handler's error, or the janitor's or a claim's note on a lease that expired), with, since
migration 0006, when each was written (``message_times``) and when the attempt it ends had
started (``message_starts``); the last attempt's start (``attempted_at``); and
``finalized_at``.  `timeline` puts them in one list of `Event` values, sorted by time.

Stamps are aligned with the messages from the newest back (older messages, and messages a Go
consumer wrote, have none): an event without a time keeps its place after the event before
it (its sort key is the last time seen).  Attempt starts are numbered so that the last one is
``attempts_elapsed``: "Attempt 1 started" appears whenever attempt 1's start is known.

`headline` is what a list shows of a message: its first line (the exception's type and
message), cut short; the detail page shows the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._records import TaskSummary

__all__ = ["HEADLINE_LENGTH", "Event", "headline", "timeline"]

#: The longest headline shown for a message (characters).
HEADLINE_LENGTH = 160

_FINAL = {"completed": "Completed", "failed": "Failed", "cancelled": "Cancelled"}


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a task's timeline.

    Attributes:
        kind: ``enqueued``, ``started``, ``error``, ``due`` or a final status.
        label: what a page shows (``Attempt 2 started``).
        at: when (None: not recorded).
        text: the message, for ``error`` entries.
    """

    kind: str
    label: str
    at: datetime | None
    text: str = ""


def headline(message: str | None, limit: int = HEADLINE_LENGTH) -> str:
    """The first line of ``message`` (empty for None), at most ``limit`` characters."""
    if not message:
        return ""
    line = message.split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _aligned(stamps: Sequence[datetime | None], count: int) -> list[datetime | None]:
    """``stamps`` aligned to ``count`` messages from the newest back (None in front)."""
    tail = list(stamps[-count:]) if count else []
    return [None] * (count - len(tail)) + tail


def timeline(
    task: TaskSummary,
    message_times: Sequence[datetime | None] = (),
    message_starts: Sequence[datetime | None] = (),
) -> list[Event]:
    """``task``'s history, oldest first (see the module docstring)."""
    count = len(task.messages)
    times = _aligned(message_times, count)
    starts = _aligned(message_starts, count)
    events: list[Event] = [Event("enqueued", "Enqueued", task.created_at)]
    start_slots: list[int] = []
    for message, at, started in zip(task.messages, times, starts, strict=True):
        if started is not None:
            start_slots.append(len(events))
            events.append(Event("started", "Attempt started", started))
        events.append(Event("error", "Error", at, message))
    known = {starts[i] for i in range(count) if starts[i] is not None}
    status = task.status.value
    if task.attempted_at is not None and task.attempted_at not in known:
        start_slots.append(len(events))
        events.append(Event("started", "Attempt started", task.attempted_at))
    if status == "pending":
        label = "Next attempt due" if task.attempts_elapsed else "Due"
        events.append(Event("due", label, task.blocked_till))
    if status in _FINAL:
        events.append(Event(status, _FINAL[status], task.finalized_at))
    first = task.attempts_elapsed - len(start_slots) + 1
    if first >= 1:
        for number, slot in enumerate(start_slots, first):
            events[slot] = Event("started", f"Attempt {number} started", events[slot].at)
    return _in_order(events)


def _in_order(events: list[Event]) -> list[Event]:
    """Sorted by time, stably; an event without a time sorts with the one before it."""
    keyed: list[tuple[datetime, int, Event]] = []
    last: datetime | None = None
    for index, event in enumerate(events):
        last = event.at if event.at is not None else last
        keyed.append((last if last is not None else events[0].at or datetime.min, index, event))
    try:
        keyed.sort(key=lambda k: (k[0], k[1]))
    except TypeError:  # naive and aware datetimes mixed: keep the written order
        return events
    return [event for _, _, event in keyed]
