"""The scheduler actor on the fake, in virtual time: one task per fire, however many consumers
run it; catch-up after downtime; restarts after database errors; both DST changes."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import psycopg
import trio

from asynqpg_trio import Schedule
from asynqpg_trio._consumer._scheduler import Scheduler
from asynqpg_trio._consumer._shared import Counters, supervise
from asynqpg_trio._core._schedule_spec import token
from asynqpg_trio._core._task import TaskInfo
from asynqpg_trio._telemetry._telemetry import Telemetry
from asynqpg_trio.testing import FakeDatabase
from asynqpg_trio.testing._schedules import FakeSchedules

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

EPOCH = datetime(2026, 5, 1, tzinfo=UTC)
EVERY_5S = Schedule("ping", every=timedelta(seconds=5))


def make_repo(epoch: datetime = EPOCH) -> FakeSchedules:
    """A schedules repository on a fake whose clock is the event loop's, from ``epoch``."""
    return FakeSchedules(FakeDatabase(epoch=epoch), epoch=epoch)


def fire_times(repo: FakeSchedules) -> list[datetime]:
    """The fire time each stored task stands for, in enqueue order."""
    times = []
    for t in repo.db.rows():
        info = TaskInfo(t.id, t.type, t.payload, t.idempotency_token, 1, 0, EPOCH, None, ())
        at = Schedule.fire_time(info)
        assert at is not None
        times.append(at)
    return times


def at(seconds: float, epoch: datetime = EPOCH) -> datetime:
    return epoch + timedelta(seconds=seconds)


@asynccontextmanager
async def running(
    repo: FakeSchedules, schedules: Sequence[Schedule], *, counters: Counters | None = None
) -> AsyncIterator[Scheduler]:
    """A scheduler (supervised, as the consumer's tree runs it) until the block ends."""
    scheduler = Scheduler(schedules, repo, Telemetry())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise, counters or Counters(), "scheduler", scheduler.run)
        yield scheduler
        nursery.cancel_scope.cancel()


async def test_it_fires_once_per_interval_on_multiples_of_it(autojump_clock: object) -> None:
    repo = make_repo()
    await trio.sleep(2.5)  # start between two fires
    async with running(repo, [EVERY_5S]) as scheduler:
        await trio.sleep(60.0)
    assert fire_times(repo) == [at(s) for s in range(5, 65, 5)]
    assert scheduler.enqueued == 12
    task = repo.db.rows()[0]
    assert (task.type, task.idempotency_token) == ("ping", token(EVERY_5S, at(5)))
    (row,) = repo.rows()
    assert (row.last_fire, row.next_fire) == (at(60), at(65))


async def test_three_consumers_enqueue_one_task_per_fire(autojump_clock: object) -> None:
    repo = make_repo()
    async with running(repo, [EVERY_5S]) as a, running(repo, [EVERY_5S]) as b:
        await trio.sleep(1.0)
        async with running(repo, [EVERY_5S]) as c:
            await trio.sleep(30.0)
        await trio.sleep(30.0)  # one of them stops: the others carry on
    assert fire_times(repo) == [at(s) for s in range(5, 65, 5)]
    assert a.enqueued + b.enqueued + c.enqueued == 12


async def test_a_new_schedule_does_not_fire_for_the_past(autojump_clock: object) -> None:
    repo = make_repo()
    await trio.sleep(3600.0)
    async with running(repo, [EVERY_5S]):
        await trio.sleep(4.0)
        (row,) = repo.rows()  # registered at start, with its next fire
        assert (row.last_fire, row.next_fire) == (None, at(3605))
    assert fire_times(repo) == []


async def downtime(schedule: Schedule) -> list[datetime]:
    """Run ``schedule`` for 21 s, stop for 100 s, run it again (a new consumer) for 10 s."""
    repo = make_repo()
    async with running(repo, [schedule]):
        await trio.sleep(21.0)
    await trio.sleep(100.5)
    async with running(repo, [schedule]):
        await trio.sleep(10.0)
    return fire_times(repo)


async def test_after_downtime_latest_enqueues_the_latest_missed_fire(
    autojump_clock: object,
) -> None:
    fires = await downtime(Schedule("ping", every=timedelta(seconds=5)))
    assert fires == [at(s) for s in (5, 10, 15, 20, 120, 125, 130)]


async def test_after_downtime_skip_enqueues_none(autojump_clock: object) -> None:
    fires = await downtime(Schedule("ping", every=timedelta(seconds=5), catch_up="skip"))
    assert fires == [at(s) for s in (5, 10, 15, 20, 125, 130)]


async def test_after_downtime_all_enqueues_every_missed_fire(autojump_clock: object) -> None:
    fires = await downtime(Schedule("ping", every=timedelta(seconds=5), catch_up="all"))
    assert fires == [at(s) for s in range(5, 135, 5)]


async def test_a_database_error_restarts_it_without_losing_a_fire(
    autojump_clock: object,
) -> None:
    repo = make_repo()
    counters = Counters()
    strict = Schedule("ping", every=timedelta(seconds=5), catch_up="skip")
    async with running(repo, [strict], counters=counters):
        await trio.sleep(12.0)
        repo.fail_next("fire", psycopg.OperationalError("connection lost"))
        await trio.sleep(8.0)
        repo.fail_next("state", psycopg.OperationalError("connection lost"))
        await trio.sleep(11.0)
    assert counters.actor_restarts == 2
    # "skip" would drop a fire a restart from scratch found missed: none is.
    assert fire_times(repo) == [at(s) for s in range(5, 35, 5)]


async def test_several_schedules_in_one_scheduler(autojump_clock: object) -> None:
    repo = make_repo()
    minutely = Schedule("sync", cron="* * * * *")
    async with running(repo, [EVERY_5S, minutely]):
        await trio.sleep(122.0)
    tokens = [t.idempotency_token for t in repo.db.rows()]
    assert tokens.count(token(minutely, at(60))) == 1
    assert tokens.count(token(minutely, at(120))) == 1
    assert len(tokens) == 24 + 2


async def dst_day(start: datetime, hours: float) -> list[str]:
    """Berlin's 02:30 and hourly schedules run by a scheduler for ``hours`` from ``start``:
    the fires, as UTC ``HH:MM type``."""
    repo = make_repo(start)
    daily = Schedule("daily", cron="30 2 * * *", timezone="Europe/Berlin")
    hourly = Schedule("hourly", cron="0 * * * *", timezone="Europe/Berlin")
    async with running(repo, [daily, hourly]):
        await trio.sleep(hours * 3600)
    return [
        f"{fire:%H:%M} {t.type}" for fire, t in zip(fire_times(repo), repo.db.rows(), strict=True)
    ]


async def test_clocks_forward_in_berlin(autojump_clock: object) -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00 UTC.
    fires = await dst_day(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 4)
    # 02:30 does not exist: "30 2" runs once, at 03:00 CEST; hourly stays hourly.
    assert fires == ["00:00 hourly", "01:00 daily", "01:00 hourly", "02:00 hourly", "03:00 hourly"]


async def test_clocks_back_in_berlin(autojump_clock: object) -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:00-03:00 local comes twice.
    fires = await dst_day(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4)
    # "30 2" runs once (the first pass, 00:30 UTC); hourly runs in both passes.
    assert fires == ["00:00 hourly", "00:30 daily", "01:00 hourly", "02:00 hourly", "03:00 hourly"]


async def test_cancelling_it_stops_the_wait(autojump_clock: object) -> None:
    repo = make_repo()
    with trio.move_on_after(7.0):
        await Scheduler([EVERY_5S], repo, Telemetry()).run()
    await trio.sleep(60.0)
    assert fire_times(repo) == [at(5)]


async def test_it_waits_on_the_loop_clock(autojump_clock: object) -> None:
    repo = make_repo()
    scheduler = Scheduler([Schedule("daily", cron="@daily")], repo, Telemetry())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(scheduler.run))
        await trio.sleep(0.5)
        before = trio.current_time()
        await trio.sleep(86400.0)  # a virtual day passes at once
        assert trio.current_time() - before == 86400.0
        nursery.cancel_scope.cancel()
    assert fire_times(repo) == [at(86400)]
