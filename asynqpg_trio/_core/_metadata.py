"""Task metadata visible to code running inside a handler, on a `contextvars.ContextVar`.

The consumer sets it around each handler call; `with_task_metadata` sets it for tests.  The
consumer stores the handler's `TaskInfo` itself and the getters derive the metadata from it
when asked: most handlers never ask, and a per-task object would cost them all.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._task import TaskInfo

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

__all__ = [
    "CURRENT_TASK",
    "TaskMetadata",
    "get_created_at",
    "get_max_retry",
    "get_retry_count",
    "get_task_id",
    "get_task_metadata",
    "with_task_metadata",
]


@dataclass(frozen=True, slots=True)
class TaskMetadata:
    """What a running handler can learn about its task without being passed it.

    Attributes:
        id: the task id.
        retry_count: attempts made before this one.
        max_retry: total attempts allowed (retry_count + attempts left, this one included).
        created_at: when the task was enqueued.
    """

    id: int
    retry_count: int
    max_retry: int
    created_at: datetime


CURRENT_TASK: contextvars.ContextVar[TaskMetadata | TaskInfo | None] = contextvars.ContextVar(
    "asynqpg_task_metadata", default=None
)


def get_task_metadata() -> TaskMetadata | None:
    """The metadata of the task being handled, or None outside a handler."""
    current = CURRENT_TASK.get()
    if isinstance(current, TaskInfo):
        return TaskMetadata(
            id=current.id,
            retry_count=current.attempts_elapsed,
            max_retry=current.attempts_elapsed + current.attempts_left,
            created_at=current.created_at,
        )
    return current


@contextlib.contextmanager
def with_task_metadata(meta: TaskMetadata) -> Iterator[TaskMetadata]:
    """Make ``meta`` the current task metadata inside the block (for handler tests)."""
    token = CURRENT_TASK.set(meta)
    try:
        yield meta
    finally:
        CURRENT_TASK.reset(token)


def get_task_id() -> int | None:
    """The current task's id, or None outside a handler."""
    meta = get_task_metadata()
    return None if meta is None else meta.id


def get_retry_count() -> int | None:
    """Attempts made before the current one, or None outside a handler."""
    meta = get_task_metadata()
    return None if meta is None else meta.retry_count


def get_max_retry() -> int | None:
    """Total attempts allowed for the current task, or None outside a handler."""
    meta = get_task_metadata()
    return None if meta is None else meta.max_retry


def get_created_at() -> datetime | None:
    """When the current task was enqueued, or None outside a handler."""
    meta = get_task_metadata()
    return None if meta is None else meta.created_at
