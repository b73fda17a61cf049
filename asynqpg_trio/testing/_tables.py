"""The task table as the testing harness sees it: PostgreSQL (`PgTable`) or a `FakeDatabase`
(`FakeTable`), behind one small interface (`Table`): enqueue, read the rows of some types,
and say when `Harness.drain` should look again.

`FakeTable.next_look` sleeps straight to the next due task when nothing is running or due,
and wakes the fetcher (the fake's wake-up notification, as a producer's NOTIFY would) when a
task is due but not claimed; `PgTable.next_look` asks again after a short tick.  Every method
is a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol

import anyio

from .._api._client import Client
from .._api._producer import Producer
from .._consumer._listener import NEW_CHANNEL
from .._core._enqueue import plan_batch
from .._core._errors import DuplicateTask
from .._core._row import TaskStatus
from .._core._task import Task, validate_task
from ._fake import FakeDatabase

__all__ = ["TICK", "EnqueuedTask", "FakeTable", "PgTable", "Table"]

#: Seconds between two looks at the table while a task is running or due.
TICK: Final = 0.05
_BUSY: Final = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class EnqueuedTask:
    """One task of the table, as `Harness.tasks` returns it (PostgreSQL or fake alike).

    Attributes:
        id: the task's id.
        type: its type.
        payload: its payload.
        status: where it is in its life.
        attempts_elapsed: attempts made (a snooze gives its attempt back).
        attempts_left: attempts still allowed.
        messages: the error of each failed attempt, oldest first (each starts with the
            exception's type and message).
        result: what the handler returned, as `Client.get_result` reads it back (None: the
            task is not completed, or its handler returned None).
    """

    id: int
    type: str
    payload: bytes
    status: TaskStatus
    attempts_elapsed: int
    attempts_left: int
    messages: tuple[str, ...]
    result: Any = None

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


class Table(Protocol):
    """What the harness does with the table: PostgreSQL or a fake."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[int | None]: ...
    async def enqueue(self, task: Task) -> int: ...
    async def rows(
        self, types: Sequence[str] | None, status: TaskStatus | None
    ) -> list[EnqueuedTask]: ...
    async def next_look(self, types: Sequence[str]) -> float | None: ...


class FakeTable:
    """The harness's table on a `FakeDatabase`."""

    def __init__(self, db: FakeDatabase, default_max_retry: int) -> None:
        self.db, self.default_max_retry = db, default_max_retry

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[int | None]:
        tasks = list(tasks)
        if tasks:
            plan_batch(tasks, self.default_max_retry)  # all valid, or InvalidTask
        await anyio.lowlevel.checkpoint()
        ids: list[int | None] = []
        for task in tasks:
            try:
                ids.append(self._insert(task))
            except DuplicateTask:
                ids.append(None)
        return ids

    async def enqueue(self, task: Task) -> int:
        await anyio.lowlevel.checkpoint()
        return self._insert(task)

    def _insert(self, task: Task) -> int:
        valid = validate_task(task, self.default_max_retry)
        delay = valid.delay
        if valid.process_at is not None:
            now = self.db.epoch + timedelta(seconds=self.db.now())
            delay = max((valid.process_at - now).total_seconds(), 0.0)
        return self.db.enqueue(
            valid.type,
            valid.payload,
            delay=delay,
            max_retry=valid.attempts,
            idempotency_token=valid.token,
            queue=valid.queue,
            priority=valid.priority,
            unique=valid.unique,
        )

    async def rows(
        self, types: Sequence[str] | None, status: TaskStatus | None
    ) -> list[EnqueuedTask]:
        await anyio.lowlevel.checkpoint()
        return [
            EnqueuedTask(
                r.id,
                r.type,
                r.payload,
                r.status,
                r.attempts_elapsed,
                r.attempts_left,
                r.messages,
                r.result,
            )
            for r in self.db.rows()
            if (types is None or r.type in types) and (status is None or r.status is status)
        ]

    async def next_look(self, types: Sequence[str]) -> float | None:
        await anyio.lowlevel.checkpoint()
        now = self.db.now()
        busy = [r for r in self.db.rows() if r.type in types and r.status in _BUSY]
        if not busy:
            return None
        if any(r.status is TaskStatus.PENDING and r.blocked_till <= now for r in busy):
            # Due, not claimed yet: wake the fetcher, as a producer's NOTIFY would (a retry
            # or a snooze written by the consumer itself is otherwise found by a poll).
            self.db.notify(NEW_CHANNEL, "")
            return TICK
        if any(r.status is TaskStatus.RUNNING for r in busy):
            return TICK
        return min(r.blocked_till for r in busy) - now  # nothing happens before that


class PgTable:
    """The harness's table on PostgreSQL."""

    def __init__(self, producer: Producer, client: Client) -> None:
        self.producer, self.client = producer, client

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[int | None]:
        return await self.producer.enqueue_many(tasks)

    async def enqueue(self, task: Task) -> int:
        return await self.producer.enqueue(task)

    async def rows(
        self, types: Sequence[str] | None, status: TaskStatus | None
    ) -> list[EnqueuedTask]:
        found: list[EnqueuedTask] = []
        after: str | None = None
        while True:
            page = await self.client.list_tasks(
                types=types, statuses=status, limit=10_000, after=after
            )
            for t in page.tasks:
                payload = await self.client.get_payload(t.id)
                result = None
                if t.status is TaskStatus.COMPLETED:
                    result = await self.client.get_result(t.id)
                found.append(
                    EnqueuedTask(
                        t.id,
                        t.type,
                        payload,
                        t.status,
                        t.attempts_elapsed,
                        t.attempts_left,
                        t.messages,
                        result,
                    )
                )
            if page.next_cursor is None:
                return found
            after = page.next_cursor

    async def next_look(self, types: Sequence[str]) -> float | None:
        page = await self.client.list_tasks(types=types, statuses=_BUSY, limit=1)
        return TICK if page.total else None
