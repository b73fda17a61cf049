"""The elector on the fake, in virtual time: it campaigns at once and every ``renew_interval``,
runs a term while it leads, ends the term when a renewal fails or comes back not-ours or the
local deadline passes, and resigns on the way out within ``resign_grace``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest
import trio
import trio.testing

from asynqpg_trio._maintenance._config import MaintenanceStats
from asynqpg_trio._maintenance._elector import SAFETY_FRACTION, Elector
from asynqpg_trio.testing import FakeDatabase

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from anyio.abc import TaskStatus

    from asynqpg_trio._core._rescue import ExpiredLease, RescueBatch, RescuePlan
    from asynqpg_trio._core._rows import MaintenanceRepository

GROUP = "default"
TTL = 15.0
RENEW = 5.0
GRACE = 3.0
HANG = 1000.0


@dataclass(eq=False)
class Terms:
    """A ``while_leader`` that runs until cancelled, recording when each term began and ended."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    async def __call__(self) -> None:
        self.starts.append(trio.current_time())
        try:
            await trio.sleep_forever()
        finally:
            self.ends.append(trio.current_time())


class Spy:
    """A `MaintenanceRepository` passing every call to a `FakeDatabase`, recording when
    ``elect`` is called; ``elect`` (once it has answered ``hang_elect_after`` times) and
    ``resign`` (when ``hang_resign`` is set) hang instead, like a database that stopped
    answering (resign for `HANG` seconds, so that an unbounded wait fails the test rather
    than hanging it)."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.elect_calls: list[float] = []
        self.hang_elect_after: int | None = None
        self.hang_resign = False

    @property
    def closed(self) -> bool:
        return self.db.closed

    async def elect(self, group: str, me: str, ttl: float) -> float | None:
        self.elect_calls.append(trio.current_time())
        if self.hang_elect_after is not None and len(self.elect_calls) > self.hang_elect_after:
            await trio.sleep_forever()
        return await self.db.elect(group, me, ttl)

    async def resign(self, group: str, me: str) -> bool:
        if self.hang_resign:
            await trio.sleep(HANG)
        return await self.db.resign(group, me)

    def resignations(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[None]]:
        return self.db.resignations(group)

    async def rescue_batch(
        self,
        group: str,
        me: str,
        batch_size: int,
        decide: Callable[[Sequence[ExpiredLease]], RescuePlan],
        idle_timeout: float | None,
    ) -> RescueBatch:
        return await self.db.rescue_batch(group, me, batch_size, decide, idle_timeout)

    async def clean_batch(
        self, group: str, me: str, status: str, retention: float, batch_size: int
    ) -> int:
        return await self.db.clean_batch(group, me, status, retention, batch_size)


def elector(repo: MaintenanceRepository, stats: MaintenanceStats, me: str = "A") -> Elector:
    return Elector(
        repo,
        group=GROUP,
        me=me,
        ttl=TTL,
        renew_interval=RENEW,
        resign_grace=GRACE,
        counters=stats,
    )


@asynccontextmanager
async def campaigning(candidate: Elector, terms: Terms) -> AsyncIterator[trio.CancelScope]:
    """Run ``candidate`` (started: its first election tried); cancelled when the block ends,
    or earlier through the scope yielded."""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(candidate.run, terms))
        await trio.testing.wait_all_tasks_blocked()  # the term, if any, has begun
        yield nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def start(nursery: trio.Nursery, candidate: Elector, terms: Terms) -> trio.CancelScope:
    """Start ``candidate`` in ``nursery`` (its first election tried); return a scope that
    stops it alone."""
    scope = trio.CancelScope()

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await candidate.run(terms, task_status=task_status)

    await nursery.start(run)
    await trio.testing.wait_all_tasks_blocked()
    return scope


async def test_the_sole_candidate_leads_at_once_and_renews_every_interval(
    autojump_clock: object,
) -> None:
    spy, stats, terms = Spy(FakeDatabase()), MaintenanceStats(), Terms()
    start = trio.current_time()
    async with campaigning(elector(spy, stats), terms):
        assert terms.starts == [start]
        assert (stats.is_leader, stats.elections_won) == (True, 1)
        assert spy.db.leader(GROUP) == "A"
        await trio.sleep(10 * TTL + 1)
        assert await spy.db.elect(GROUP, "B", TTL) is None  # renewed all along
        assert (terms.ends, stats.elections_won, stats.leadership_lost) == ([], 1, 0)
    assert spy.elect_calls == pytest.approx([start + k * RENEW for k in range(31)])


async def test_a_follower_takes_over_once_the_lease_of_a_dead_leader_lapses(
    autojump_clock: object,
) -> None:
    db, stats, terms = FakeDatabase(), MaintenanceStats(), Terms()
    start = trio.current_time()
    assert await db.elect(GROUP, "dead", 12.0) is not None  # and never renews
    async with campaigning(elector(db, stats), terms):
        assert (terms.starts, stats.is_leader) == ([], False)
        await trio.sleep(14.0)
        assert terms.starts == []  # the campaign at 10 s found the lease live
        await trio.sleep(2.0)
        assert terms.starts == [pytest.approx(start + 15.0)]  # the campaign at 15 s won
        assert db.leader(GROUP) == "A"


async def test_a_failed_renewal_ends_the_term_at_once_and_the_campaign_goes_on(
    autojump_clock: object,
) -> None:
    db, stats, terms = FakeDatabase(), MaintenanceStats(), Terms()
    start = trio.current_time()
    async with campaigning(elector(db, stats), terms):
        await trio.sleep(RENEW + 1)  # after the first renewal
        db.fail_next("elect", psycopg.OperationalError("connection lost"))
        await trio.sleep(RENEW)
        # The renewal at 10 s failed: the term ended then; the retry 0.25 s later won.
        assert terms.ends == [pytest.approx(start + 2 * RENEW)]
        assert terms.starts == [start, pytest.approx(start + 2 * RENEW + 0.25)]
        assert (stats.errors, stats.leadership_lost, stats.elections_won) == (1, 1, 2)
        assert stats.is_leader


async def test_a_renewal_that_comes_back_not_ours_ends_the_term(autojump_clock: object) -> None:
    skew = [0.0]
    db = FakeDatabase(clock=lambda: trio.current_time() + skew[0])
    stats, terms = MaintenanceStats(), Terms()
    start = trio.current_time()
    async with campaigning(elector(db, stats), terms):
        await trio.sleep(1.0)
        skew[0] = TTL  # on the database's clock A's lease has lapsed ...
        assert await db.elect(GROUP, "B", 3600.0) is not None  # ... and B took it
        await trio.sleep(RENEW)
        assert terms.ends == [pytest.approx(start + RENEW)]  # at the renewal after that
        assert (stats.is_leader, stats.leadership_lost, stats.errors) == (False, 1, 0)
        await trio.sleep(10 * RENEW)
        assert len(terms.starts) == 1  # B leads; A campaigns and loses
        assert db.leader(GROUP) == "B"


async def test_the_term_ends_at_its_local_deadline_when_renewals_hang(
    autojump_clock: object,
) -> None:
    spy, stats, terms = Spy(FakeDatabase()), MaintenanceStats(), Terms()
    spy.hang_elect_after = 1  # the first election answers, no renewal ever does
    start = trio.current_time()
    async with campaigning(elector(spy, stats), terms):
        await trio.sleep(TTL - 1)
        deadline = start + TTL * (1 - SAFETY_FRACTION)  # before the database lease lapses
        assert terms.ends == [pytest.approx(deadline)]
        assert (stats.is_leader, stats.leadership_lost) == (False, 1)
        assert stats.errors == 0  # the hung renewal has not timed out yet
        await trio.sleep(RENEW + 2)
        assert stats.errors == 1  # it timed out after the TTL
        assert len(terms.starts) == 1


async def test_cancellation_resigns_and_a_follower_takes_over_at_once(
    autojump_clock: object,
) -> None:
    db = FakeDatabase()
    a_stats, a_terms = MaintenanceStats(), Terms()
    b_stats, b_terms = MaintenanceStats(), Terms()
    async with trio.open_nursery() as nursery:
        a_scope = await start(nursery, elector(db, a_stats, me="A"), a_terms)
        await start(nursery, elector(db, b_stats, me="B"), b_terms)
        await trio.sleep(7.0)  # between two campaigns of either
        assert (db.leader(GROUP), b_terms.starts) == ("A", [])
        stopped = trio.current_time()
        a_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert a_terms.ends == [stopped]
        assert (a_stats.is_leader, a_stats.leadership_lost) == (False, 0)  # stopped, not lost
        assert b_terms.starts == [stopped]  # woken by the resignation, not by its interval
        assert db.leader(GROUP) == "B"
        nursery.cancel_scope.cancel()


async def test_resigning_takes_at_most_the_grace_then_the_lease_is_left_to_lapse(
    autojump_clock: object,
) -> None:
    spy, stats, terms = Spy(FakeDatabase()), MaintenanceStats(), Terms()
    spy.hang_resign = True
    async with campaigning(elector(spy, stats), terms) as scope:
        await trio.sleep(1.0)
        stopped = trio.current_time()
        scope.cancel()
    assert trio.current_time() == pytest.approx(stopped + GRACE)
    assert terms.ends == [stopped]  # the term ended before resigning began
    assert spy.db.leader(GROUP) == "A"  # not resigned: the lease lapses by itself
    await trio.sleep(TTL)
    assert spy.db.leader(GROUP) is None


async def test_a_failed_listen_is_retried_and_resignations_are_heard_again(
    autojump_clock: object,
) -> None:
    db = FakeDatabase()
    db.fail_next("resignations", psycopg.OperationalError("no LISTEN connection"))
    stats, terms = MaintenanceStats(), Terms()
    assert await db.elect(GROUP, "other", 3600.0) is not None
    async with campaigning(elector(db, stats), terms):
        assert stats.errors == 1  # started all the same
        await trio.sleep(1.0)  # LISTEN is back after the back-off
        assert await db.resign(GROUP, "other")
        await trio.testing.wait_all_tasks_blocked()
        assert terms.starts == [pytest.approx(trio.current_time())]  # heard at once
