"""The scheduler's data edge: the frozen values the schedules repository takes and returns, and
its Protocol (pure: no I/O library is imported here).

``asynqpg_schedules`` holds one row per schedule name: what the schedule is (as the consumer
that wrote last declares it), the latest fire enqueued (it never moves back) and the next fire
expected.  Consumers read the last fires at every wake-up and write a row with every fire they
enqueue, in the enqueue's transaction (`SchedulesRepository.fire`).  The PostgreSQL repository
is ``_pg/_schedules_repo.py``'s `PgSchedules`; the in-memory one ``testing``'s `FakeSchedules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ._schedule_spec import Schedule
from ._task import Task

__all__ = [
    "DEFAULT_MAX_RETRY",
    "FireRecord",
    "ScheduleRow",
    "ScheduleState",
    "SchedulesRepository",
    "record_for",
]

#: Runs allowed to a scheduled task whose schedule sets no ``max_retry`` (the producer's).
DEFAULT_MAX_RETRY = 3


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What a scheduler reads at each wake-up.

    Attributes:
        now: the database clock.
        last_fires: schedule name -> the latest fire any consumer enqueued (names never
            fired are absent).
    """

    now: datetime
    last_fires: Mapping[str, datetime]


@dataclass(frozen=True, slots=True)
class FireRecord:
    """A schedule's row as one consumer writes it: its declaration, the latest fire it has
    just enqueued (None: nothing this time) and the next fire it expects."""

    name: str
    type: str
    spec: str
    timezone: str
    catch_up: str
    last_fire: datetime | None
    next_fire: datetime | None


def record_for(
    schedule: Schedule, last_fire: datetime | None, next_fire: datetime | None
) -> FireRecord:
    """The row to write for ``schedule``."""
    return FireRecord(
        schedule.name,
        schedule.type,
        schedule.spec,
        schedule.timezone,
        schedule.catch_up,
        last_fire,
        next_fire,
    )


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One row of ``asynqpg_schedules``, as ``asynqpg-trio schedules`` lists it.

    Attributes:
        name, type, spec, timezone, catch_up: the schedule, as last declared.
        last_fire: the latest fire enqueued (None: none yet).
        next_fire: the next fire, as the consumer that wrote last expected it.
        updated_at: when a consumer last wrote the row (database clock): an old one means
            no consumer runs this schedule any more.
    """

    name: str
    type: str
    spec: str
    timezone: str
    catch_up: str
    last_fire: datetime | None
    next_fire: datetime | None
    updated_at: datetime


class SchedulesRepository(Protocol):
    """What the scheduler uses of the schedules repository (one method per transaction)."""

    async def state(self, names: Sequence[str]) -> ScheduleState:
        """The database clock and the last fires recorded for these schedules."""
        ...

    async def fire(
        self, record: FireRecord, tasks: Sequence[Task], *, trace: str | None
    ) -> list[int | None]:
        """Enqueue ``tasks`` (each with its fire's idempotency token) and write ``record``,
        in one transaction; return one entry per task: its id, or None for a fire some
        consumer had enqueued already."""
        ...
