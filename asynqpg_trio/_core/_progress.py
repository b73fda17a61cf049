"""Progress reports from running handlers: what to write, and when (pure: no I/O, no clock).

Theory of operation
-------------------
A handler calls `report_progress` as often as it likes; the database sees at most one write
per task per `ProgressBook.interval` seconds.  The book keeps, per task being handled, the
latest value reported, whether it is written yet (dirty), and when the task's last write
was.  The consumer's progress writer asks `ProgressBook.due` for the dirty entries whose
interval has passed, writes them in one statement, and sleeps until the next one is due.

The last value is never lost to the throttle: when the handler returns, the actor takes the
task's latest value with `ProgressBook.finish` and the completion writes it with the result,
in the same statement that completes the task (a progress write racing it is fenced by the
lease and changes nothing once the task is completed).

The book is touched from the event loop and from sync handlers' worker threads, so every
method holds its lock; times (``now``) come in as arguments.

`report_progress` reaches the book through `CURRENT_SINK`, a context variable each handler
actor sets once for its whole life (so no per-task cost), and reads the task id from the task
metadata.  Outside a handler it does nothing.
"""

from __future__ import annotations

import contextvars
import math
import threading
from dataclasses import dataclass
from typing import Final, Protocol

from ._errors import AsynqpgError
from ._metadata import get_task_id

__all__ = [
    "CURRENT_SINK",
    "MAX_NOTE_LENGTH",
    "PROGRESS_INTERVAL",
    "InvalidProgress",
    "Progress",
    "ProgressBook",
    "ProgressSink",
    "check_progress",
    "report_progress",
]

#: Seconds between two progress writes of one task (at most 4 writes a second).
PROGRESS_INTERVAL: Final = 0.25
#: The longest progress note stored (characters).
MAX_NOTE_LENGTH: Final = 1000


class InvalidProgress(AsynqpgError, ValueError):
    """`report_progress` was given a fraction outside 0..1 (or not a number), or a note that
    is not text."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report: how far the handler is (0.0 to 1.0) and an optional note."""

    fraction: float
    note: str | None


def check_progress(fraction: object, note: object) -> Progress:
    """Validate a report; a note is cut to `MAX_NOTE_LENGTH` characters.

    Raises:
        InvalidProgress: the fraction is not a number from 0 to 1, or the note not a str.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidProgress(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
    value = float(fraction)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidProgress(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
    if note is not None and not isinstance(note, str):
        raise InvalidProgress(f"a progress note must be a str or None, got {note!r}")
    if note is not None:
        note = note.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
        note = note[:MAX_NOTE_LENGTH]
    return Progress(value, note)


@dataclass(slots=True)
class _Entry:
    token: int
    latest: Progress
    dirty: bool
    written_at: float  # -inf: never written


class ProgressBook:
    """The latest progress of each task being handled, throttled to one write per
    ``interval`` seconds per task (see the module docstring)."""

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._entries)

    def report(self, task_id: int, token: int, progress: Progress) -> None:
        """Record ``progress`` as the task's latest (under lease ``token``)."""
        with self._lock:
            entry = self._entries.get(task_id)
            if entry is None or entry.token != token:
                self._entries[task_id] = _Entry(token, progress, True, -math.inf)
            else:
                entry.latest, entry.dirty = progress, True

    def due(self, now: float) -> tuple[list[tuple[int, int, Progress]], float | None]:
        """The dirty entries whose interval has passed at ``now`` as (id, token, progress),
        marked written (at ``now``), and when the next dirty one falls due (None: none is
        dirty)."""
        with self._lock:
            ready: list[tuple[int, int, Progress]] = []
            later: float | None = None
            for task_id, entry in self._entries.items():
                if not entry.dirty:
                    continue
                when = entry.written_at + self.interval
                if when <= now:
                    ready.append((task_id, entry.token, entry.latest))
                    entry.dirty, entry.written_at = False, now
                elif later is None or when < later:
                    later = when
            return ready, later

    def finish(self, task_id: int) -> Progress | None:
        """Forget the task; return its latest progress (None: it reported none)."""
        if not self._entries:  # the common case: nothing reported, no lock needed
            return None
        with self._lock:
            entry = self._entries.pop(task_id, None)
        return None if entry is None else entry.latest


class ProgressSink(Protocol):
    """Where `report_progress` sends a report: the consumer running the handler."""

    def report(self, task_id: int, progress: Progress) -> bool:
        """Record the report; return whether the task is held by this consumer."""
        ...


#: The sink of the consumer whose handler actor runs this code (None: not in a handler).
CURRENT_SINK: contextvars.ContextVar[ProgressSink | None] = contextvars.ContextVar(
    "asynqpg_progress_sink", default=None
)


def report_progress(fraction: float, note: str | None = None) -> bool:
    """Report how far the current task's handler is, from inside the handler.

    Stored with the task (``progress``, ``progress_note``, ``progress_at``; shown by
    `Client.get_task`, ``asynqpg-trio tasks show`` and the dashboard), at most a few writes a
    second per task however often it is called; the last value reported before the handler
    returns is written with its completion.  Works in async handlers and in sync handlers'
    threads.  Not a checkpoint and never blocks: the consumer writes in the background.

    Args:
        fraction: from 0.0 (nothing done) to 1.0 (all done).
        note: a short text for people (at most 1000 characters are kept).

    Returns:
        True if it was recorded; False outside a handler run by a consumer (in a unit test
        of a handler, say), where it does nothing.

    Raises:
        InvalidProgress: ``fraction`` is not a number from 0 to 1, or ``note`` not a str.
    """
    progress = check_progress(fraction, note)
    sink = CURRENT_SINK.get()
    task_id = get_task_id()
    if sink is None or task_id is None:
        return False
    return sink.report(task_id, progress)


InvalidProgress.__module__ = "asynqpg_trio"
