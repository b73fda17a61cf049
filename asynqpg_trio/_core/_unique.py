"""Unique tasks: the `Unique` value a `Task` carries, and what the insert stores for it.

Theory of operation
-------------------
A unique task holds a *slot*, (type, key, window), for as long as its status is one of its
``states``.  The database keeps at most one row per held slot: migration 0004's partial unique
index ``asynqpg_tasks_unique_idx`` covers exactly the rows with ``asynqpg_unique_live(status,
unique_states)``, so a row that moves to a status outside its states leaves the index by
itself, and the slot is free again.  The insert's ``ON CONFLICT DO NOTHING`` skips a task whose
slot is held; the producer then looks the holder up and reports its id.

* The key is the user's text, or ``"sha256:"`` and the hex SHA-256 of the payload
  (`derived_key`): the same payload, the same key.
* With a period, the window is the start of the period the database clock is in when the
  task is inserted: periods are counted in whole microseconds from the Unix epoch (UTC), so
  every producer computes the same one (`window_start`, and the same arithmetic in SQL).
  Without a period there is one window for all time (NULL in the row).
* ``states`` travel as a bitmask (`states_mask`; `STATUS_BITS` must match the SQL function
  ``asynqpg_unique_live``).  They must include pending and running: the consumer moves tasks
  between those two on its own (claim, retry, snooze, release, rescue), and a move into a
  held slot would fail its whole statement.  Only an operator's manual retry or cancel can
  move a task into its states from outside them; the client refuses that with
  `DuplicateTask` when the slot is held.

Pure: no I/O, no clock (times come in as arguments).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from ._checks import storable
from ._errors import InvalidTask

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "MAX_UNIQUE_KEY_LENGTH",
    "MAX_UNIQUE_PERIOD",
    "STATUS_BITS",
    "Unique",
    "derived_key",
    "is_live",
    "period_micros",
    "states_mask",
    "unique_columns",
    "window_start",
]

#: The bit of each status in ``unique_states`` (the SQL function asynqpg_unique_live agrees).
STATUS_BITS: Final = {"pending": 1, "running": 2, "completed": 4, "failed": 8, "cancelled": 16}
_REQUIRED: Final = ("pending", "running")
#: The states a `Unique` holds its slot in unless told otherwise.
DEFAULT_UNIQUE_STATES: Final = _REQUIRED
#: The longest explicit key, in characters (the index entry must stay well under its limit).
MAX_UNIQUE_KEY_LENGTH: Final = 255
#: The longest period.
MAX_UNIQUE_PERIOD: Final = timedelta(days=36525)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True, init=False)
class Unique:
    """What makes a task unique: at most one task of its type holds the same key (in the same
    period, if one is given) while in one of ``states``.

    The database enforces it, across every producer: enqueueing a task whose place is held
    inserts nothing and reports the holder (`Producer.enqueue` raises `DuplicateTask` with its
    id; `Producer.enqueue_many` returns None in that task's place).

    Args:
        key: the uniqueness key, 1 to 255 characters; None derives it from the payload
            (``"sha256:"`` followed by the payload's hex SHA-256), so two tasks of one type
            with equal payloads are duplicates.
        period: seconds or a `timedelta` (at least a microsecond, at most 100 years), or None.
            With a period the key holds only within the period the database clock is in at
            insert: periods are counted from the Unix epoch (UTC), so ``period=3600``
            allows one task per clock hour (00:00 to 01:00 UTC, ...), ``86400`` one per UTC day.
        states: the statuses in which a task holds its key: any of ``"pending"``,
            ``"running"``, ``"completed"``, ``"failed"``, ``"cancelled"``; pending and running
            must be among them.  The default, pending and running: once the task completed,
            failed or was cancelled, a new one may be enqueued.  Add ``"completed"`` to allow
            only one successful run ever (or per period).

    Attributes:
        key: the explicit key, or None (derived from the payload).
        period: the period in seconds, or None.
        states: the statuses, in lifecycle order, without repeats.

    Raises:
        InvalidTask: a value is out of range; the message names the field (``unique.key``,
            ``unique.period`` or ``unique.states``).
    """

    key: str | None
    period: float | None
    states: tuple[str, ...]

    def __init__(
        self,
        key: str | None = None,
        *,
        period: float | timedelta | None = None,
        states: Iterable[str] = DEFAULT_UNIQUE_STATES,
    ) -> None:
        object.__setattr__(self, "key", _check_key(key))
        object.__setattr__(self, "period", _check_period(period))
        object.__setattr__(self, "states", _check_states(states))


def _check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        raise InvalidTask(f"unique.key must be a str or None, got {type(key).__name__}")
    if not storable(key):
        raise InvalidTask("unique.key must be text without NUL characters or lone surrogates")
    if not 0 < len(key) <= MAX_UNIQUE_KEY_LENGTH:
        raise InvalidTask(
            f"unique.key must be 1 to {MAX_UNIQUE_KEY_LENGTH} characters long, got {len(key)}"
            " (None derives the key from the payload)"
        )
    return key


def _check_period(period: object) -> float | None:
    if period is None:
        return None
    if isinstance(period, timedelta):
        value = period.total_seconds()
    elif isinstance(period, int | float) and not isinstance(period, bool):
        value = float(period)
    else:
        raise InvalidTask(f"unique.period must be seconds, a timedelta or None, got {period!r}")
    if not (math.isfinite(value) and 1e-6 <= value <= MAX_UNIQUE_PERIOD.total_seconds()):
        raise InvalidTask(
            f"unique.period must be from one microsecond to {MAX_UNIQUE_PERIOD.days} days,"
            f" got {period!r}"
        )
    return value


def _check_states(states: object) -> tuple[str, ...]:
    if isinstance(states, str) or not isinstance(states, Iterable):
        raise InvalidTask(
            f"unique.states must be a collection of statuses such as ('pending', 'running'),"
            f" got {states!r}"
        )
    given = list(states)  # pyright: ignore[reportUnknownArgumentType]
    unknown = [s for s in given if s not in STATUS_BITS]
    if unknown:
        raise InvalidTask(
            f"unique.states: unknown status {unknown[0]!r}; the statuses are "
            + ", ".join(STATUS_BITS)
        )
    missing = [s for s in _REQUIRED if s not in given]
    if missing:
        raise InvalidTask(
            f"unique.states must include 'pending' and 'running' (missing {missing[0]!r}): the"
            " consumer moves tasks between them, and a move into a held key would fail"
        )
    return tuple(s for s in STATUS_BITS if s in given)


def derived_key(payload: bytes) -> str:
    """The key of a `Unique` without one: ``"sha256:"`` and the payload's hex SHA-256."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def states_mask(states: Iterable[str]) -> int:
    """The ``unique_states`` bitmask of ``states``."""
    return sum(STATUS_BITS[s] for s in set(states))


def is_live(status: str, mask: int) -> bool:
    """Whether a row in ``status`` with ``unique_states = mask`` holds its slot."""
    return bool(mask & STATUS_BITS[status])


def period_micros(period: float) -> int:
    """A period in whole microseconds (at least one), as the insert takes it."""
    return max(1, round(period * 1_000_000))


def window_start(now: datetime, micros: int) -> datetime:
    """The start of the period of ``micros`` microseconds that ``now`` (aware) falls in."""
    since = (now - _EPOCH) // _MICROSECOND
    return _EPOCH + (since - since % micros) * _MICROSECOND


def unique_columns(
    uniques: list[Unique | None], payloads: list[bytes]
) -> tuple[list[str | None], list[int | None], list[int | None]]:
    """The insert's unique columns for a batch, in input order: each task's key (explicit or
    derived), period in microseconds and states bitmask; None for a task without `Unique`."""
    plans = {
        u: (None if u.period is None else period_micros(u.period), states_mask(u.states))
        for u in set(uniques)
        if u is not None
    }
    keys: list[str | None] = []
    periods: list[int | None] = []
    masks: list[int | None] = []
    for unique, payload in zip(uniques, payloads, strict=True):
        if unique is None:
            keys.append(None)
            periods.append(None)
            masks.append(None)
        else:
            keys.append(derived_key(payload) if unique.key is None else unique.key)
            micros, mask = plans[unique]
            periods.append(micros)
            masks.append(mask)
    return keys, periods, masks
