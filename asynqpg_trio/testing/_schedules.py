"""`FakeSchedules`: the scheduler's schedules repository in memory, over a `FakeDatabase`.

Theory of operation
-------------------
The schedule rows live in a dict; a fire's tasks are enqueued into the `FakeDatabase` it
wraps, whose (type, idempotency token) check plays the unique index: a duplicate is skipped
(None), as ``ON CONFLICT DO NOTHING`` skips it.  Tasks are validated as the producer validates
them (`InvalidTask`, nothing written).  Time is the database's clock, as a datetime (``epoch``
plus the clock's seconds), so Trio's ``autojump_clock`` drives a scheduler on it.  Each method
is a checkpoint and then runs to completion, atomic like the transaction it stands for.  The
contract suite (``tests/contract/test_schedules_repository.py``) runs the same tests against
it and `PgSchedules`; where they differ, PostgreSQL is right.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import anyio

from .._core._errors import DuplicateTask
from .._core._schedule_rows import (
    DEFAULT_MAX_RETRY,
    FireRecord,
    ScheduleRow,
    ScheduleState,
)
from .._core._task import Task, validate_task
from ._fake import EPOCH, FakeDatabase

__all__ = ["FakeSchedules"]

_METHODS = frozenset({"state", "fire"})


class FakeSchedules:
    """A `SchedulesRepository` in memory, firing into ``db``.

    Args:
        db: the fake task table the fires' tasks go to (its clock is the database clock).
        epoch: the datetime of instant 0 on ``db``'s clock.
    """

    def __init__(self, db: FakeDatabase, *, epoch: datetime = EPOCH) -> None:
        self.db = db
        self._epoch = epoch
        self._rows: dict[str, ScheduleRow] = {}
        self._failures: dict[str, BaseException] = {}

    def now(self) -> datetime:
        """The database clock, as a datetime."""
        return self._epoch + timedelta(seconds=self.db.now())

    def rows(self) -> list[ScheduleRow]:
        """Every schedule row, by name."""
        return [self._rows[name] for name in sorted(self._rows)]

    def fail_next(self, method: str, error: BaseException) -> None:
        """Make the next call of ``method`` (``"state"`` or ``"fire"``) raise ``error`` after
        its checkpoint, changing nothing."""
        if method not in _METHODS:
            raise ValueError(f"not a repository method: {method!r} (one of {sorted(_METHODS)})")
        self._failures[method] = error

    async def state(self, names: Sequence[str]) -> ScheduleState:
        """The clock and the last fire of each named schedule that has one.

        Cancellation: a checkpoint.
        """
        await self._enter("state")
        last = {
            name: row.last_fire
            for name in names
            if (row := self._rows.get(name)) is not None and row.last_fire is not None
        }
        return ScheduleState(now=self.now(), last_fires=last)

    async def fire(
        self, record: FireRecord, tasks: Sequence[Task], *, trace: str | None
    ) -> list[int | None]:
        """Enqueue ``tasks`` (duplicates skipped: None) and write ``record``, at once.

        Cancellation: a checkpoint before anything is written.
        """
        await self._enter("fire")
        valid = [validate_task(task, DEFAULT_MAX_RETRY) for task in tasks]  # all or nothing
        context = None if trace is None else json.loads(trace)  # stored as jsonb: parsed
        ids: list[int | None] = []
        for task in valid:
            try:
                ids.append(
                    self.db.enqueue(
                        task.type,
                        task.payload,
                        max_retry=task.attempts,
                        idempotency_token=task.token,
                        trace_context=context,
                    )
                )
            except DuplicateTask:
                ids.append(None)
        self._write(record)
        return ids

    def _write(self, record: FireRecord) -> None:
        new = ScheduleRow(
            record.name,
            record.type,
            record.spec,
            record.timezone,
            record.catch_up,
            record.last_fire,
            record.next_fire,
            self.now(),
        )
        old = self._rows.get(record.name)
        if old is not None:
            same = (old.spec, old.timezone) == (new.spec, new.timezone)
            new = replace(
                new,
                last_fire=_greatest(old.last_fire, new.last_fire),
                next_fire=_greatest(old.next_fire, new.next_fire) if same else new.next_fire,
            )
        self._rows[record.name] = new

    async def _enter(self, method: str) -> None:
        await anyio.lowlevel.checkpoint()
        error = self._failures.pop(method, None)
        if error is not None:
            raise error


def _greatest(a: datetime | None, b: datetime | None) -> datetime | None:
    """PostgreSQL's greatest(): the larger, NULLs ignored."""
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)
