"""The schedules repository's contract, run against `FakeSchedules` and `PgSchedules`.

What the scheduler relies on: a fire's tasks are inserted through the producer's path with
duplicates (same type and token) skipped, the row is written in the same transaction, the
stored last fire never moves back, and the next fire does not either unless the schedule's
spec changed.  Where the two backends differ, PostgreSQL is right.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from asynqpg_trio import InvalidTask, Schedule, Task, open_pool
from asynqpg_trio._core._schedule_rows import FireRecord, ScheduleRow, record_for
from asynqpg_trio._core._schedule_spec import token
from asynqpg_trio._pg._schedules_repo import PgSchedules, list_schedules
from asynqpg_trio.testing import FakeDatabase
from asynqpg_trio.testing._schedules import FakeSchedules

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asynqpg_trio import Pool
    from asynqpg_trio._core._schedule_rows import SchedulesRepository

SCHEDULE = Schedule("report", every=timedelta(seconds=60), payload=b"p", max_retry=5)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Stored:
    """One task as both backends report it."""

    type: str
    payload: bytes
    token: str | None
    attempts_left: int


class Backend:
    """A schedules repository and the test's view of what it stored."""

    name: str
    repo: SchedulesRepository

    async def tasks(self) -> list[Stored]:
        raise NotImplementedError

    async def rows(self) -> list[ScheduleRow]:
        raise NotImplementedError


class FakeBackend(Backend):
    name = "fake"

    def __init__(self) -> None:
        self.schedules = FakeSchedules(FakeDatabase(clock=lambda: 1000.0))
        self.repo = self.schedules

    async def tasks(self) -> list[Stored]:
        return [
            Stored(t.type, t.payload, t.idempotency_token, t.attempts_left)
            for t in self.schedules.db.rows()
        ]

    async def rows(self) -> list[ScheduleRow]:
        return self.schedules.rows()


class PgBackend(Backend):
    name = "pg"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.repo = PgSchedules(pool)

    async def tasks(self) -> list[Stored]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT type, payload, idempotency_token, attempts_left FROM asynqpg_tasks"
                " ORDER BY id"
            )
            return [Stored(*row) for row in await cur.fetchall()]

    async def rows(self) -> list[ScheduleRow]:
        async with self.pool.connection() as conn:
            return await list_schedules(conn)


@pytest.fixture(params=["fake", "pg"])
async def schedules_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "fake":
        yield FakeBackend()
        return
    dsn: str = request.getfixturevalue("dsn")
    async with open_pool(dsn, min_size=1, max_size=2) as pool:
        yield PgBackend(pool)


def fires(*minutes: int) -> list[datetime]:
    return [T0 + timedelta(minutes=m) for m in minutes]


def tasks_for(*at: datetime) -> list[Task]:
    return [
        Task(
            SCHEDULE.type,
            SCHEDULE.payload,
            idempotency_token=token(SCHEDULE, f),
            max_retry=SCHEDULE.max_retry,
        )
        for f in at
    ]


def record(last: datetime | None, next_fire: datetime | None, **changes: Any) -> FireRecord:
    return replace(record_for(SCHEDULE, last, next_fire), **changes)


async def test_a_fire_is_enqueued_once_whoever_fires_it(schedules_backend: Backend) -> None:
    first = await schedules_backend.repo.fire(
        record(fires(2)[0], fires(3)[0]), tasks_for(*fires(1, 2)), trace=None
    )
    assert all(isinstance(i, int) for i in first)
    # Another consumer enqueues the same fires, and one more.
    again = await schedules_backend.repo.fire(
        record(fires(3)[0], fires(4)[0]), tasks_for(*fires(1, 2, 3)), trace=None
    )
    assert again[:2] == [None, None]
    assert isinstance(again[2], int)
    stored = await schedules_backend.tasks()
    assert [t.token for t in stored] == [token(SCHEDULE, f) for f in fires(1, 2, 3)]
    assert {(t.type, t.payload, t.attempts_left) for t in stored} == {("report", b"p", 5)}


async def test_the_row_is_written_with_the_fire(schedules_backend: Backend) -> None:
    assert (await schedules_backend.repo.state([SCHEDULE.name])).last_fires == {}
    await schedules_backend.repo.fire(
        record(None, fires(1)[0]), (), trace=None
    )  # the start: no fire
    (row,) = await schedules_backend.rows()
    assert (row.name, row.type, row.spec, row.timezone, row.catch_up) == (
        SCHEDULE.name,
        "report",
        "every 60s",
        "UTC",
        "latest",
    )
    assert (row.last_fire, row.next_fire) == (None, fires(1)[0])
    assert (await schedules_backend.repo.state([SCHEDULE.name, "other"])).last_fires == {}
    await schedules_backend.repo.fire(
        record(fires(1)[0], fires(2)[0]), tasks_for(*fires(1)), trace=None
    )
    state = await schedules_backend.repo.state([SCHEDULE.name, "other"])
    assert state.last_fires == {SCHEDULE.name: fires(1)[0]}
    assert state.now.tzinfo is not None


async def test_the_last_and_next_fires_never_move_back(schedules_backend: Backend) -> None:
    await schedules_backend.repo.fire(
        record(fires(5)[0], fires(6)[0]), tasks_for(*fires(5)), trace=None
    )
    # A consumer lagging behind records an older fire and an older next one.
    await schedules_backend.repo.fire(
        record(fires(3)[0], fires(4)[0]), tasks_for(*fires(3)), trace=None
    )
    (row,) = await schedules_backend.rows()
    assert (row.last_fire, row.next_fire) == (fires(5)[0], fires(6)[0])
    # The schedule's spec changed under the same name: its next fire is the new one's.
    await schedules_backend.repo.fire(record(None, fires(4)[0], spec="every 30s"), (), trace=None)
    (row,) = await schedules_backend.rows()
    assert (row.spec, row.last_fire, row.next_fire) == ("every 30s", fires(5)[0], fires(4)[0])


async def test_an_invalid_task_writes_nothing(schedules_backend: Backend) -> None:
    bad = [*tasks_for(*fires(1)), Task("", b"")]
    with pytest.raises(InvalidTask):
        await schedules_backend.repo.fire(record(fires(1)[0], fires(2)[0]), bad, trace=None)
    assert await schedules_backend.tasks() == []
    assert await schedules_backend.rows() == []


async def test_the_default_max_retry_is_the_producers(schedules_backend: Backend) -> None:
    task = Task("report", b"", idempotency_token="t")
    await schedules_backend.repo.fire(record(fires(1)[0], None), [task], trace=None)
    assert [t.attempts_left for t in await schedules_backend.tasks()] == [3]
