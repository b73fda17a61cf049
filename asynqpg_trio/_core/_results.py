"""Handler results: how a return value is stored and read back, and the errors of waiting.

Theory of operation
-------------------
A handler's return value is stored with its completed task, encoded here (pure: no I/O):

* ``None`` stores nothing (the row's result columns stay NULL, as on rows a Go consumer
  completes, and on every row written before results existed);
* ``bytes`` (or ``bytearray`` / ``memoryview``) are stored as they are, codec ``"bytes"``,
  and read back as `bytes`;
* anything else must be JSON-serialisable (`json.dumps`: dicts with str keys, lists,
  tuples, str, int, float, bool) and is stored as its compact JSON text in UTF-8, codec
  ``"json"``; it is read back with `json.loads` (so a tuple comes back as a list).

An encoded result longer than the handler's ``result_limit`` raises `ResultTooLarge`, and a
value JSON cannot encode raises `ResultNotSerializable`: the consumer counts either as the
attempt's error (the task is retried as any failed attempt is), with a message saying what to
do.  `decode_result` is the inverse, used by `Client.get_result`, `Client.wait` and the fake.

`TaskFailed`, `TaskCancelled` and `TaskNotFinished` are what the client raises when a task has
no result to give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from ._errors import AsynqpgError, TaskNotFound

__all__ = [
    "CODEC_BYTES",
    "CODEC_JSON",
    "DEFAULT_RESULT_LIMIT",
    "ResultNotSerializable",
    "ResultTooLarge",
    "StoredOutcome",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFinished",
    "decode_result",
    "encode_result",
]

#: Codec of a result stored as the bytes the handler returned.
CODEC_BYTES: Final = "bytes"
#: Codec of a result stored as JSON text (UTF-8).
CODEC_JSON: Final = "json"
#: The default ``Handler.result_limit``: 1 MiB of encoded result.
DEFAULT_RESULT_LIMIT: Final = 1 << 20


class ResultTooLarge(AsynqpgError):
    """A handler returned a result whose encoding is longer than its ``result_limit``.

    Raised inside the consumer and recorded as the attempt's error (the task is retried like
    any failed attempt); differs from `ResultNotSerializable` (that result has no encoding).

    Attributes:
        task_type: the handler's task type.
        size: the encoded result's length in bytes.
        limit: the handler's ``result_limit``.
    """

    def __init__(self, task_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"the handler for {task_type!r} returned a result of {size} bytes, more than its"
            f" result_limit of {limit}: store large outputs elsewhere (a file, an object"
            f" store) and return a reference to them, or raise Handler(result_limit=...)"
        )
        self.task_type: str = task_type
        self.size: int = size
        self.limit: int = limit

    def __reduce__(self) -> tuple[type[ResultTooLarge], tuple[str, int, int]]:
        return (type(self), (self.task_type, self.size, self.limit))


class ResultNotSerializable(AsynqpgError, TypeError):
    """A handler returned a value that is neither bytes nor JSON-serialisable.

    Raised inside the consumer and recorded as the attempt's error (the task is retried like
    any failed attempt).

    Attributes:
        task_type: the handler's task type.
        reason: what `json.dumps` said.
    """

    def __init__(self, task_type: str, reason: str) -> None:
        super().__init__(
            f"the handler for {task_type!r} returned a result that cannot be stored ({reason}):"
            f" return None, bytes, or a JSON-serialisable value (dict with str keys, list,"
            f" str, int, float, bool), e.g. convert dataclasses with dataclasses.asdict()"
        )
        self.task_type: str = task_type
        self.reason: str = reason

    def __reduce__(self) -> tuple[type[ResultNotSerializable], tuple[str, str]]:
        return (type(self), (self.task_type, self.reason))


class _FinishedWithout(AsynqpgError):
    """A task that ended without a result (base of `TaskFailed` and `TaskCancelled`)."""

    def __init__(self, task_id: int, message: str | None) -> None:
        self.task_id: int = task_id
        self.message: str | None = message
        super().__init__(self._text())

    def _text(self) -> str:
        raise NotImplementedError

    def __reduce__(self) -> tuple[type[_FinishedWithout], tuple[int, str | None]]:
        return (type(self), (self.task_id, self.message))


class TaskFailed(_FinishedWithout):
    """The task failed for good: `Client.wait` and `Client.get_result` have no result to give.

    Differs from `TaskCancelled` (someone cancelled it).

    Attributes:
        task_id: the task.
        message: the last error message it recorded (its last attempt's), or None.
    """

    def _text(self) -> str:
        last = "" if self.message is None else f"; its last error: {self.message}"
        return f"task {self.task_id} failed{last}"


class TaskCancelled(_FinishedWithout):
    """The task was cancelled: `Client.wait` and `Client.get_result` have no result to give.

    Attributes:
        task_id: the task.
        message: the last error message it recorded before it was cancelled, or None.
    """

    def _text(self) -> str:
        last = "" if self.message is None else f" (its last error: {self.message})"
        return f"task {self.task_id} was cancelled{last}"


class TaskNotFinished(AsynqpgError):
    """`Client.get_result` was asked for a task that is still pending or running.

    Wait for it with `Client.wait` instead (which returns the result once it is completed).

    Attributes:
        task_id: the task.
        status: its status now (``"pending"`` or ``"running"``).
    """

    def __init__(self, task_id: int, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}, not completed, so it has no result yet:"
            f" wait for it with Client.wait({task_id})"
        )
        self.task_id: int = task_id
        self.status: str = status

    def __reduce__(self) -> tuple[type[TaskNotFinished], tuple[int, str]]:
        return (type(self), (self.task_id, self.status))


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """What the database holds of a task's end: its status (None: no such task), stored
    result and codec, and its last message."""

    task_id: int
    status: str | None
    result: bytes | None
    codec: str | None
    message: str | None

    def value(self) -> Any:
        """The result, or the error for a task that has none.

        Raises:
            TaskFailed, TaskCancelled: it ended without a result.
            TaskNotFinished: it is still pending or running.
            TaskNotFound: it does not exist.
        """
        if self.status == "completed":
            return decode_result(self.result, self.codec)
        if self.status == "failed":
            raise TaskFailed(self.task_id, self.message)
        if self.status == "cancelled":
            raise TaskCancelled(self.task_id, self.message)
        if self.status is None:
            raise TaskNotFound(self.task_id)
        raise TaskNotFinished(self.task_id, self.status)


def encode_result(value: object, *, limit: int, task_type: str) -> tuple[bytes, str] | None:
    """Encode a handler's return value for storage: ``(data, codec)``, or None for None.

    Raises:
        ResultTooLarge: the encoding is longer than ``limit`` bytes.
        ResultNotSerializable: the value is not bytes and JSON cannot encode it.
    """
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        data, codec = bytes(value), CODEC_BYTES
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as ex:
            raise ResultNotSerializable(task_type, str(ex)) from None
        data, codec = text.encode("utf-8", "surrogatepass"), CODEC_JSON
    if len(data) > limit:
        raise ResultTooLarge(task_type, len(data), limit)
    return data, codec


def decode_result(data: bytes | None, codec: str | None) -> Any:
    """The value a stored result stands for (None when nothing was stored)."""
    if data is None or codec is None:
        return None
    if codec == CODEC_BYTES:
        return bytes(data)
    if codec == CODEC_JSON:
        return json.loads(bytes(data).decode("utf-8", "surrogatepass"))
    raise ValueError(f"unknown result codec {codec!r}")


for _cls in (ResultTooLarge, ResultNotSerializable, TaskFailed, TaskCancelled, TaskNotFinished):
    _cls.__module__ = "asynqpg_trio"
del _cls
