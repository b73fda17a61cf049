"""The values users hand to the producer and handlers receive: `Task` and `TaskInfo`.

`Task` is only data; `validate_task` checks it against the table's limits before any database
work, so a bad task is refused with `InvalidTask` naming the field, and a bad batch is refused
whole with the index of the first bad task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._errors import InvalidTask

__all__ = ["MAX_ATTEMPTS", "MAX_TYPE_LENGTH", "Task", "TaskInfo", "validate_task"]

#: The longest task type the ``type`` column (varchar(255)) holds, in characters.
MAX_TYPE_LENGTH = 255
#: The largest ``max_retry`` the ``attempts_left`` column (smallint) holds.
MAX_ATTEMPTS = 32767


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work to enqueue.

    Attributes:
        type: routes the task to the handler registered for it (1 to 255 characters).
        payload: opaque bytes handed to the handler (may be empty).
        idempotency_token: optional; at most one task per (type, token) exists at a time.
        delay: seconds (or a `timedelta`) from the database's now until the task is ready.
        max_retry: how many times the task may run in all (the Go library's meaning; 0 and 1
            both mean once).  None takes the producer's default.
        process_at: an aware `datetime` at which the task becomes ready; overrides ``delay``;
            a time in the past means now.
    """

    type: str
    payload: bytes
    idempotency_token: str | None = None
    delay: float | timedelta = 0.0
    max_retry: int | None = None
    process_at: datetime | None = None


@dataclass(slots=True)
class TaskInfo:
    """A claimed task, as a handler receives it.

    The counters are those before this attempt, as in the Go library: ``attempts_elapsed`` is
    the number of earlier attempts, ``attempts_left`` includes this one.  A plain record:
    changing it changes nothing in the database.  (Not frozen: a frozen dataclass costs
    several times more to build, once per task.)

    Attributes:
        id: the task's id.
        type: its type.
        payload: its payload.
        idempotency_token: its token, if any.
        attempts_left: attempts remaining, this one included.
        attempts_elapsed: attempts made before this one.
        created_at: when it was enqueued (database clock).
        attempted_at: when this attempt was claimed (database clock).
        messages: error messages of earlier attempts, oldest first.
    """

    id: int
    type: str
    payload: bytes
    idempotency_token: str | None
    attempts_left: int
    attempts_elapsed: int
    created_at: datetime
    attempted_at: datetime | None
    messages: tuple[str, ...]


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidTask(f"{field} must be seconds (int or float) or a timedelta, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidTask(f"{field} must be a finite, non-negative duration, got {value!r}")
    return seconds


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidTask(f"{field} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidTask(f"{field} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTask(
                f"{field} must be valid Unicode text, got {value!r} (a lone surrogate)"
            ) from None
    return value


@dataclass(frozen=True, slots=True)
class ValidTask:
    """A task checked against the table's limits, ready for the insert's arrays."""

    type: str
    payload: bytes
    token: str | None
    delay: float
    process_at: datetime | None
    attempts: int


def validate_task(task: Any, default_max_retry: int) -> ValidTask:
    """Check one task; return its normalised form or raise `InvalidTask`."""
    if not isinstance(task, Task):
        raise InvalidTask(f"expected an asynqpg_trio.Task, got {type(task).__name__}")
    task_type = _text(task.type, "type")
    if not task_type:
        raise InvalidTask("type must not be empty")
    if len(task_type) > MAX_TYPE_LENGTH:
        raise InvalidTask(
            f"type is {len(task_type)} characters long; the most is {MAX_TYPE_LENGTH}"
        )
    if not isinstance(task.payload, bytes | bytearray | memoryview):
        raise InvalidTask(
            f"payload must be bytes, got {type(task.payload).__name__} "
            "(encode text or JSON first, e.g. json.dumps(obj).encode())"
        )
    token = task.idempotency_token
    if token is not None:
        token = _text(token, "idempotency_token")
        if not token:
            raise InvalidTask("idempotency_token must not be empty (use None for no token)")
    max_retry = default_max_retry if task.max_retry is None else task.max_retry
    if isinstance(max_retry, bool) or not isinstance(max_retry, int):
        raise InvalidTask(f"max_retry must be an int, got {max_retry!r}")
    if not 0 <= max_retry <= MAX_ATTEMPTS:
        raise InvalidTask(f"max_retry must be between 0 and {MAX_ATTEMPTS}, got {max_retry}")
    delay = _seconds(task.delay, "delay")
    process_at = task.process_at
    if process_at is not None:
        if not isinstance(process_at, datetime):
            raise InvalidTask(f"process_at must be a datetime, got {type(process_at).__name__}")
        if process_at.tzinfo is None or process_at.utcoffset() is None:
            raise InvalidTask(
                "process_at must be timezone-aware (e.g. datetime.now(timezone.utc)), got a "
                "naive datetime"
            )
    return ValidTask(
        type=task_type,
        payload=bytes(task.payload),
        token=token,
        delay=delay,
        process_at=process_at,
        attempts=max(max_retry, 1),
    )
