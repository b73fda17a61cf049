"""The janitor and the cleaner on the fake, in virtual time: their bounded runs, and how
`run_maintenance` schedules them (once at once when leadership is won, then every interval),
stops them when leadership is lost, and resigns when cancelled."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import psycopg
import pytest
import trio
import trio.testing

from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._policies import ConstantRetryPolicy
from asynqpg_trio._core._row import TaskStatus
from asynqpg_trio._maintenance._config import MaintenanceConfig, MaintenanceStats
from asynqpg_trio._maintenance._janitor import RescueResult, clean_finalized, rescue_expired
from asynqpg_trio._maintenance._run import run_maintenance
from asynqpg_trio.testing import FakeDatabase

from ..helpers.state_db import plan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asynqpg_trio._core._rows import ClaimedTask

TYPE = "t"
GROUP = "default"
LEASE = 30.0
DELAY = 5.0
POLICY = ConstantRetryPolicy(DELAY)
CONFIG = MaintenanceConfig(
    group=GROUP,
    ttl=15.0,
    renew_interval=5.0,
    janitor_interval=10.0,
    cleaner_interval=30.0,
    completed_retention=60.0,
    failed_retention=60.0,
    cancelled_retention=60.0,
    resign_grace=3.0,
)


async def claim(db: FakeDatabase, n: int, *, lease: float = LEASE) -> list[ClaimedTask]:
    """Claim ``n`` ready tasks as consumer ``W``."""
    rows = await db.claim(
        ClaimPlan.of({TYPE: n}),
        owner="W",
        lease=lease,
        takeover_message="",
        exhausted_message="",
        grace=1,
    )
    assert len(rows) == n
    return rows


def statuses(db: FakeDatabase) -> list[TaskStatus]:
    return [t.status for t in db.rows()]


# -- one run of each, called directly -----------------------------------------------------


async def test_rescue_works_off_expired_leases_in_bounded_runs(autojump_clock: object) -> None:
    db = FakeDatabase()
    db.enqueue(TYPE, max_retry=1)  # no attempt left once claimed: it fails
    for _ in range(4):
        db.enqueue(TYPE, max_retry=3)
    await claim(db, 5)
    await trio.sleep(LEASE + 1)
    assert await db.elect(GROUP, "J", 3600.0) is not None
    rescue = partial(rescue_expired, db, group=GROUP, me="J", policy=POLICY)

    assert await rescue(batch_size=2, max_batches=2) == RescueResult(rescued=3, failed=1)
    assert statuses(db)[-1] is TaskStatus.RUNNING  # the fifth waits for the next run
    assert await rescue(batch_size=2, max_batches=2) == RescueResult(rescued=1, failed=0)
    assert await rescue(batch_size=2, max_batches=2) == RescueResult()
    assert statuses(db) == [TaskStatus.FAILED] + [TaskStatus.PENDING] * 4
    for task in db.rows()[1:]:
        assert task.blocked_till == pytest.approx(trio.current_time() + DELAY)
        assert task.messages == (
            f"lease expired (consumer W stopped renewing); rescued by janitor J, "
            f"retry in {DELAY:.1f} s",
        )


async def test_a_janitor_that_does_not_lead_rescues_nothing(autojump_clock: object) -> None:
    db = FakeDatabase()
    db.enqueue(TYPE)
    await claim(db, 1)
    await trio.sleep(LEASE + 1)
    assert await db.elect(GROUP, "other", 3600.0) is not None
    result = await rescue_expired(
        db, group=GROUP, me="J", policy=POLICY, batch_size=10, max_batches=10
    )
    assert result == RescueResult()
    assert statuses(db) == [TaskStatus.RUNNING]


async def test_clean_deletes_per_status_retention_in_bounded_runs(autojump_clock: object) -> None:
    db = FakeDatabase()
    for _ in range(3):
        db.cancel(db.enqueue(TYPE))
    for _ in range(3):
        db.enqueue(TYPE)
    done = await claim(db, 3)
    written = await db.write_outcomes(
        plan([Outcome(r.id, r.lease_token, OutcomeKind.COMPLETE) for r in done if r.lease_token])
    )
    assert len(written) == 3
    assert await db.elect(GROUP, "J", 3600.0) is not None
    clean = partial(clean_finalized, db, group=GROUP, me="J", batch_size=2, max_batches=1)
    retentions = {"completed": 60.0, "cancelled": 120.0}

    assert await clean(retentions=retentions) == 0
    await trio.sleep(61.0)
    assert await clean(retentions=retentions) == 2  # completed only, one batch
    assert await clean(retentions=retentions) == 1
    await trio.sleep(60.0)
    assert await clean(retentions=retentions) == 2  # cancelled now
    assert await clean(retentions=retentions) == 1
    assert db.rows() == []
    with pytest.raises(ValueError, match="not final statuses"):
        await clean(retentions={"running": 0.0})


# -- run_maintenance ----------------------------------------------------------------------


@asynccontextmanager
async def maintaining(db: FakeDatabase, stats: MaintenanceStats) -> AsyncIterator[trio.CancelScope]:
    """`run_maintenance` as ``J`` on ``db`` (started); cancelled when the block ends, or
    earlier through the scope yielded."""
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_maintenance, db, client_id="J", config=CONFIG, retry_policy=POLICY, stats=stats
            )
        )
        await trio.testing.wait_all_tasks_blocked()  # the term, if any, has begun
        yield nursery.cancel_scope
        nursery.cancel_scope.cancel()


def runs(stats: MaintenanceStats) -> tuple[int, int]:
    return stats.janitor_runs, stats.cleaner_runs


async def test_both_run_once_on_winning_then_every_interval(autojump_clock: object) -> None:
    db, stats = FakeDatabase(), MaintenanceStats()
    async with maintaining(db, stats):
        assert (stats.is_leader, runs(stats)) == (True, (1, 1))
        seen = []
        await trio.sleep(0.5)  # sample between runs
        for _ in range(6):
            await trio.sleep(10.0)
            seen.append(runs(stats))
    assert seen == [(2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 3)]


async def test_the_runs_rescue_and_clean_what_falls_due(autojump_clock: object) -> None:
    db, stats = FakeDatabase(), MaintenanceStats()
    held = db.enqueue(TYPE)
    await claim(db, 1, lease=25.0)  # expires between the janitor's runs at 20 s and 30 s
    async with maintaining(db, stats):
        await trio.sleep(0.5)
        cancelled = db.enqueue(TYPE)
        db.cancel(cancelled)  # past its retention between the cleaner's runs at 60 s and 90 s
        await trio.sleep(29.0)
        assert (db.get(held).status, stats.rescued) == (TaskStatus.RUNNING, 0)
        await trio.sleep(1.0)
        assert (db.get(held).status, stats.rescued) == (TaskStatus.PENDING, 1)
        assert "rescued by janitor J" in db.get(held).messages[-1]
        await trio.sleep(59.0)
        assert (db.get(cancelled).status, stats.cleaned) == (TaskStatus.CANCELLED, 0)
        await trio.sleep(1.0)
        assert stats.cleaned == 1
        assert [t.id for t in db.rows()] == [held]
        assert stats.errors == 0


async def test_losing_the_leadership_stops_both_until_it_is_won_again(
    autojump_clock: object,
) -> None:
    skew = [0.0]
    db = FakeDatabase(clock=lambda: trio.current_time() + skew[0])
    stats = MaintenanceStats()
    async with maintaining(db, stats):
        await trio.sleep(1.0)
        skew[0] = CONFIG.ttl  # J's lease has lapsed on the database's clock ...
        assert await db.elect(GROUP, "R", 3600.0) is not None  # ... and R took it
        await trio.sleep(CONFIG.renew_interval)  # J's renewal comes back not-ours
        assert (stats.is_leader, stats.leadership_lost) == (False, 1)
        await trio.sleep(100.0)
        assert runs(stats) == (1, 1)  # neither ran while R led

        assert await db.resign(GROUP, "R")
        await trio.testing.wait_all_tasks_blocked()
        assert (stats.is_leader, stats.elections_won) == (True, 2)
        assert runs(stats) == (2, 2)  # at once, on winning again


async def test_a_transient_error_is_counted_and_the_run_retried_at_its_interval(
    autojump_clock: object,
) -> None:
    db, stats = FakeDatabase(), MaintenanceStats()
    async with maintaining(db, stats):
        db.fail_next("rescue_batch", psycopg.OperationalError("connection lost"))
        db.fail_next("clean_batch", psycopg.OperationalError("connection lost"))
        await trio.sleep(10.5)
        assert (runs(stats), stats.errors) == ((1, 1), 1)  # the janitor's second run failed
        await trio.sleep(10.0)
        assert runs(stats) == (2, 1)
        await trio.sleep(10.0)
        assert (runs(stats), stats.errors) == ((3, 1), 2)  # the cleaner's second run failed
        await trio.sleep(30.0)
        assert runs(stats) == (6, 2)
        assert (stats.is_leader, stats.leadership_lost) == (True, 0)


async def test_cancellation_stops_both_then_resigns(autojump_clock: object) -> None:
    db, stats = FakeDatabase(), MaintenanceStats()
    async with db.resignations(GROUP) as heard:
        async with maintaining(db, stats) as scope:
            await trio.sleep(0.5)
            stopped = trio.current_time()
            scope.cancel()
        assert trio.current_time() == stopped
        assert (stats.is_leader, stats.leadership_lost) == (False, 0)
        assert db.leader(GROUP) is None
        with trio.fail_after(1.0):
            await anext(heard)
    await trio.sleep(100.0)
    assert runs(stats) == (1, 1)


async def test_a_failed_resignation_leaves_the_lease_to_lapse(autojump_clock: object) -> None:
    db, stats = FakeDatabase(), MaintenanceStats()
    async with maintaining(db, stats):
        await trio.sleep(0.5)
        db.fail_next("resign", psycopg.OperationalError("connection lost"))
    assert db.leader(GROUP) == "J"
    await trio.sleep(CONFIG.ttl)
    assert db.leader(GROUP) is None
