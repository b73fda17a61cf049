"""The values users hand to the producer and handlers receive: `Task` and `TaskInfo`.

`Task` is only data; `validate_task` checks it against the table's limits before any database
work, so a bad task is refused with `InvalidTask` naming the field, and a bad batch is refused
whole with the index of the first bad task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._checks import seconds, storable
from ._errors import InvalidTask
from ._unique import Unique

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_ATTEMPTS",
    "MAX_PRIORITY",
    "MAX_QUEUE_LENGTH",
    "MIN_PRIORITY",
    "MAX_TYPE_LENGTH",
    "Task",
    "TaskInfo",
    "attempts_for",
    "check_delay",
    "check_priority",
    "check_process_at",
    "check_queue",
    "check_token",
    "check_type",
    "check_unique",
    "validate_task",
]

#: The longest task type the ``type`` column (varchar(255)) holds, in characters.
MAX_TYPE_LENGTH = 255
#: The largest ``max_retry`` the ``attempts_left`` column (smallint) holds.
MAX_ATTEMPTS = 32767
#: The queue of a task enqueued without one (and of every row a Go producer inserts).
DEFAULT_QUEUE = "default"
#: The longest queue name, in characters.
MAX_QUEUE_LENGTH = 128
#: The most urgent priority: among due tasks the claim takes larger priorities first.
MAX_PRIORITY = 5
#: The least urgent priority.
MIN_PRIORITY = -5


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
        queue: the named queue it goes on (1 to 128 characters; default ``"default"``);
            only consumers serving that queue claim it.
        priority: from -5 (least urgent) to 5 (most urgent), default 0.  Among due tasks of
            a queue, a claim takes larger priorities first, then earlier due times.
        unique: optional; a `Unique` makes the task unique by type and key (optionally per
            period) while in chosen states: a duplicate is not inserted.
    """

    type: str
    payload: bytes
    idempotency_token: str | None = None
    delay: float | timedelta = 0.0
    max_retry: int | None = None
    process_at: datetime | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    unique: Unique | None = None


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
        queue: the queue it was enqueued on.
        priority: its priority (larger runs first).
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
    queue: str = "default"
    priority: int = 0


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidTask(f"{field} must be a str, got {type(value).__name__}")
    if not storable(value):
        if "\x00" in value:
            raise InvalidTask(f"{field} must not contain NUL characters")
        raise InvalidTask(f"{field} must be valid Unicode text, got {value!r} (a lone surrogate)")
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
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    unique: Unique | None = None


def check_unique(value: Any) -> Unique | None:
    """A task's ``unique``: None or a `Unique` (validated when it was made)."""
    if value is not None and not isinstance(value, Unique):
        raise InvalidTask(
            f"unique must be an asynqpg_trio.Unique or None, got {type(value).__name__}"
        )
    return value


def check_queue(value: Any, field: str = "queue") -> str:
    """A queue name: non-empty text of at most `MAX_QUEUE_LENGTH` characters."""
    name = _text(value, field)
    if not 0 < len(name) <= MAX_QUEUE_LENGTH:
        raise InvalidTask(
            f"{field} must be 1 to {MAX_QUEUE_LENGTH} characters long, got {len(name)}"
        )
    return name


def check_priority(value: Any) -> int:
    """A priority: an int from `MIN_PRIORITY` to `MAX_PRIORITY`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTask(f"priority must be an int, got {value!r}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidTask(
            f"priority must be between {MIN_PRIORITY} (least urgent) and {MAX_PRIORITY}"
            f" (most urgent), got {value}"
        )
    return value


def check_type(value: Any) -> str:
    """A task type: non-empty text of at most `MAX_TYPE_LENGTH` characters."""
    task_type = _text(value, "type")
    if not task_type:
        raise InvalidTask("type must not be empty")
    if len(task_type) > MAX_TYPE_LENGTH:
        raise InvalidTask(
            f"type is {len(task_type)} characters long; the most is {MAX_TYPE_LENGTH}"
        )
    return task_type


def check_token(value: Any) -> str | None:
    """An idempotency token: None, or non-empty text."""
    if value is None:
        return None
    token = _text(value, "idempotency_token")
    if not token:
        raise InvalidTask("idempotency_token must not be empty (use None for no token)")
    return token


def check_delay(value: Any) -> float:
    """A delay in seconds (from seconds or a `timedelta`)."""
    return seconds(value, "delay", allow_zero=True, error=InvalidTask)


def attempts_for(max_retry: Any, default_max_retry: int) -> int:
    """The ``attempts_left`` a task starts with: its ``max_retry`` (or the default), at least 1."""
    value = default_max_retry if max_retry is None else max_retry
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTask(f"max_retry must be an int, got {value!r}")
    if not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidTask(f"max_retry must be between 0 and {MAX_ATTEMPTS}, got {value}")
    return max(value, 1)


def check_process_at(value: Any) -> datetime | None:
    """A ``process_at``: None, or an aware `datetime`."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidTask(f"process_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTask(
            "process_at must be timezone-aware (e.g. datetime.now(timezone.utc)), got a "
            "naive datetime"
        )
    return value


def validate_task(task: Any, default_max_retry: int) -> ValidTask:
    """Check one task; return its normalised form or raise `InvalidTask`."""
    if not isinstance(task, Task):
        raise InvalidTask(f"expected an asynqpg_trio.Task, got {type(task).__name__}")
    task_type = check_type(task.type)
    if not isinstance(task.payload, bytes | bytearray | memoryview):
        raise InvalidTask(
            f"payload must be bytes, got {type(task.payload).__name__} "
            "(encode text or JSON first, e.g. json.dumps(obj).encode())"
        )
    token = check_token(task.idempotency_token)
    attempts = attempts_for(task.max_retry, default_max_retry)
    delay = check_delay(task.delay)
    process_at = check_process_at(task.process_at)
    return ValidTask(
        type=task_type,
        payload=bytes(task.payload),
        token=token,
        delay=delay,
        process_at=process_at,
        attempts=attempts,
        queue=check_queue(task.queue),
        priority=check_priority(task.priority),
        unique=check_unique(task.unique),
    )
