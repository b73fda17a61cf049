"""The maintenance repository's contract, run against `FakeDatabase` and PostgreSQL
(`PgMaintenance`).

Each test drives ``backend.maintenance`` as the elector, the janitor and the cleaner do (the
tasks it works on are made through ``backend.tasks``, as a consumer makes them) and reads back
through ``backend.view`` and ``backend.leader``; see ``conftest.py`` for the two backends and
the clock.  No test waits on a boundary: PostgreSQL's clock runs on in real time.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._policies import ConstantRetryPolicy
from asynqpg_trio._core._rescue import ExpiredLease, RescueBatch, RescuePlan, plan_rescue

from ..helpers.state_db import plan
from .conftest import approx

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from asynqpg_trio._core._rows import ClaimedTask

    from .conftest import Backend, View

GROUP = "g"
TTL = 30.0
#: A lease that outlives every test: the janitor's leadership never lapses by accident.
FOREVER = 3600.0
LEASE = 30.0
DELAY = 5.0
NOTHING = RescueBatch(locked=0, rescued=0, failed=0)


async def elect(backend: Backend, me: str, *, ttl: float = TTL, group: str = GROUP) -> bool:
    return await backend.maintenance.elect(group, me, ttl) is not None


async def claimed(
    backend: Backend, n: int = 1, *, max_retry: int = 3, owner: str = "W"
) -> list[ClaimedTask]:
    """Enqueue ``n`` tasks and claim them as consumer ``owner``; the rows, in id order."""
    ids = [await backend.enqueue(max_retry=max_retry) for _ in range(n)]
    rows = await backend.tasks.claim(
        ClaimPlan.of({"t": n}),
        owner=owner,
        lease=LEASE,
        takeover_message="taken over",
        exhausted_message="exhausted",
        grace=5.0,
    )
    assert sorted(r.id for r in rows) == ids
    return sorted(rows, key=lambda r: r.id)


def token(row: ClaimedTask) -> int:
    assert row.lease_token is not None
    return row.lease_token


def janitor(name: str = "J") -> Callable[[Sequence[ExpiredLease]], RescuePlan]:
    """The janitor's pure decision, as `rescue_expired` passes it."""
    return partial(plan_rescue, janitor=name, policy=ConstantRetryPolicy(DELAY))


async def rescue(
    backend: Backend,
    me: str = "J",
    *,
    batch: int = 10,
    decide: Callable[[Sequence[ExpiredLease]], RescuePlan] | None = None,
) -> RescueBatch:
    return await backend.maintenance.rescue_batch(GROUP, me, batch, decide or janitor(me), None)


async def clean(
    backend: Backend, status: str, retention: float, *, me: str = "J", batch: int = 10
) -> int:
    return await backend.maintenance.clean_batch(GROUP, me, status, retention, batch)


async def view(backend: Backend, task_id: int) -> View:
    found = await backend.view(task_id)
    assert found is not None
    return found


# -- election -----------------------------------------------------------------------------


async def test_the_first_candidate_leads_until_its_lease_lapses(backend: Backend) -> None:
    before = trio.current_time()
    sent = await backend.maintenance.elect(GROUP, "A", TTL)
    assert sent is not None
    assert before <= sent <= trio.current_time()  # the event loop's clock, read before sending
    assert await backend.leader(GROUP) == "A"
    assert not await elect(backend, "B")
    await backend.advance(TTL - 2)
    assert not await elect(backend, "B")  # A's lease is still live
    assert await elect(backend, "A")  # renewed: another TTL from now
    await backend.advance(TTL - 2)  # past the first lease, within the renewed one
    assert not await elect(backend, "B")
    assert await backend.leader(GROUP) == "A"
    await backend.advance(3)

    assert await backend.leader(GROUP) is None  # lapsed: nobody leads until someone campaigns
    assert await elect(backend, "B")
    assert await backend.leader(GROUP) == "B"
    assert not await elect(backend, "A")  # A's renewal comes back not-ours: it lost


async def test_a_lapsed_holder_may_take_its_lease_back(backend: Backend) -> None:
    assert await elect(backend, "A")
    await backend.advance(TTL + 1)
    assert await backend.leader(GROUP) is None
    assert await elect(backend, "A")
    assert await backend.leader(GROUP) == "A"
    assert not await elect(backend, "B")


async def test_groups_elect_independently(backend: Backend) -> None:
    assert await elect(backend, "A", group="g")
    assert await elect(backend, "B", group="h")
    assert not await elect(backend, "B", group="g")
    assert not await elect(backend, "A", group="h")
    assert (await backend.leader("g"), await backend.leader("h")) == ("A", "B")


async def test_resigning_hands_the_lease_over_at_once(backend: Backend) -> None:
    assert await elect(backend, "A")
    assert not await backend.maintenance.resign(GROUP, "B")  # not B's to give up
    assert await backend.leader(GROUP) == "A"
    assert await backend.maintenance.resign(GROUP, "A")
    assert await backend.leader(GROUP) is None
    assert not await backend.maintenance.resign(GROUP, "A")  # gone already
    assert await elect(backend, "B")  # no waiting for A's TTL
    assert await backend.leader(GROUP) == "B"


async def test_a_lapsed_lease_is_still_resigned(backend: Backend) -> None:
    assert await elect(backend, "A")
    await backend.advance(TTL + 1)
    assert await backend.maintenance.resign(GROUP, "A")  # the row was A's, expired or not
    assert not await backend.maintenance.resign(GROUP, "A")


async def test_resignations_are_announced_to_the_group(backend: Backend) -> None:
    async with backend.maintenance.resignations(GROUP) as heard:
        assert await elect(backend, "A", group="other")
        assert await elect(backend, "A")
        assert await backend.maintenance.resign("other", "A")  # another group's
        assert not await backend.maintenance.resign(GROUP, "B")  # resigns nothing
        assert await backend.maintenance.resign(GROUP, "A")
        with trio.fail_after(10):
            await anext(heard)
        # Had either of the first two been heard, the one above was it and A's is still due.
        with trio.move_on_after(0.3):
            await anext(heard)
            pytest.fail("heard a resignation of another group, or of nobody")


# -- rescue -------------------------------------------------------------------------------


async def test_rescue_puts_an_expired_lease_back_to_pending(backend: Backend) -> None:
    (row,) = await claimed(backend, max_retry=3)
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(LEASE - 1)
    assert await rescue(backend) == NOTHING  # the lease has not expired yet
    await backend.advance(2)
    seen: list[ExpiredLease] = []

    def decide(rows: Sequence[ExpiredLease]) -> RescuePlan:
        seen.extend(rows)
        return janitor()(rows)

    assert await rescue(backend, decide=decide) == RescueBatch(locked=1, rescued=1, failed=0)

    assert seen == [ExpiredLease(row.id, token(row), "W", attempts_left=2, attempts_elapsed=1)]
    v = await view(backend, row.id)
    assert (v.status, v.attempts_left, v.attempts_elapsed) == ("pending", 2, 1)
    assert (v.leased, v.lease_owner, v.finalized) == (False, None, False)
    assert v.messages == (
        "lease expired (consumer W stopped renewing); rescued by janitor J, retry in 5.0 s",
    )
    assert v.ready_in == approx(DELAY)
    assert await rescue(backend) == NOTHING  # nothing left to rescue
    assert await backend.tasks.extend_leases([row.id], [token(row)], LEASE) == set()


async def test_rescue_fails_a_task_with_no_attempt_left(backend: Backend) -> None:
    (row,) = await claimed(backend, max_retry=1)
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(LEASE + 1)

    assert await rescue(backend) == RescueBatch(locked=1, rescued=0, failed=1)

    v = await view(backend, row.id)
    assert (v.status, v.attempts_left, v.attempts_elapsed) == ("failed", 0, 1)
    assert (v.leased, v.lease_owner, v.finalized) == (False, None, True)
    assert v.messages == (
        "lease expired (consumer W stopped renewing) and no attempt is left; failed by janitor J",
    )
    assert await rescue(backend) == NOTHING


async def test_rescue_takes_the_oldest_expiries_first_up_to_the_batch(backend: Backend) -> None:
    a, b, c = await claimed(backend, 3)  # one claim: the three leases expire together
    await backend.advance(1)
    assert await backend.tasks.extend_leases([a.id], [token(a)], LEASE) == {a.id}
    await backend.advance(1)
    assert await backend.tasks.extend_leases([b.id], [token(b)], LEASE) == {b.id}
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(LEASE + 1)  # all expired: c first, then a, then b

    assert await rescue(backend, batch=2) == RescueBatch(locked=2, rescued=2, failed=0)
    assert [(await view(backend, r.id)).status for r in (a, b, c)] == [
        "pending",
        "running",
        "pending",
    ]
    assert await rescue(backend, batch=2) == RescueBatch(locked=1, rescued=1, failed=0)
    assert await rescue(backend, batch=2) == NOTHING


async def test_a_janitor_that_does_not_lead_rescues_nothing(backend: Backend) -> None:
    (row,) = await claimed(backend)
    await backend.advance(LEASE + 1)
    assert await rescue(backend) == NOTHING  # nobody leads
    assert await elect(backend, "K")
    assert await rescue(backend) == NOTHING  # K leads
    await backend.advance(TTL + 1)
    assert await elect(backend, "J")
    await backend.advance(TTL + 1)
    assert await rescue(backend) == NOTHING  # J's own lease has lapsed
    v = await view(backend, row.id)
    assert (v.status, v.leased, v.lease_owner, v.messages) == ("running", True, "W", ())

    assert await elect(backend, "J")  # leading again, the same call rescues it
    assert await rescue(backend) == RescueBatch(locked=1, rescued=1, failed=0)


async def test_rescue_writes_nothing_the_row_refutes(backend: Backend) -> None:
    stale, misjudged = await claimed(backend, 2)
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(LEASE + 1)

    def tampered(rows: Sequence[ExpiredLease]) -> RescuePlan:
        honest = janitor()(rows)
        # One entry carries a token nobody read; the other fails a task with attempts left.
        tokens = tuple(
            t + 1000 if i == stale.id and t is not None else t
            for i, t in zip(honest.ids, honest.tokens, strict=True)
        )
        statuses = tuple(
            "failed" if i == misjudged.id else s
            for i, s in zip(honest.ids, honest.statuses, strict=True)
        )
        return replace(honest, tokens=tokens, statuses=statuses)

    assert await rescue(backend, decide=tampered) == RescueBatch(locked=2, rescued=0, failed=0)
    for row in (stale, misjudged):
        v = await view(backend, row.id)
        assert (v.status, v.leased, v.lease_owner, v.messages) == ("running", True, "W", ())
    assert await rescue(backend) == RescueBatch(locked=2, rescued=2, failed=0)


# -- clean --------------------------------------------------------------------------------


async def finalized(backend: Backend) -> tuple[int, int, int]:
    """A completed, a failed and a cancelled task, finalized now."""
    done, bad = await claimed(backend, 2)
    written = await backend.tasks.write_outcomes(
        plan(
            [
                Outcome(done.id, token(done), OutcomeKind.COMPLETE),
                Outcome(bad.id, token(bad), OutcomeKind.FAIL, message="boom"),
            ]
        )
    )
    assert written == {done.id, bad.id}
    cancelled = await backend.enqueue()
    await backend.cancel(cancelled)
    return done.id, bad.id, cancelled


async def test_clean_deletes_finalized_tasks_past_their_status_retention(
    backend: Backend,
) -> None:
    completed, failed, cancelled = await finalized(backend)
    pending = await backend.enqueue(delay=FOREVER)
    (running,) = await claimed(backend)
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(59)
    for status in ("completed", "failed", "cancelled"):
        assert await clean(backend, status, 60) == 0
    await backend.advance(2)

    assert await clean(backend, "completed", 60) == 1
    assert await clean(backend, "failed", 120) == 0  # a longer retention
    assert await clean(backend, "cancelled", 60) == 1
    assert await clean(backend, "pending", 0) == 0  # never a task that is not final
    assert await clean(backend, "running", 0) == 0

    assert await backend.view(completed) is None
    assert await backend.view(cancelled) is None
    assert (await view(backend, failed)).status == "failed"
    assert (await view(backend, pending)).status == "pending"
    assert (await view(backend, running.id)).status == "running"
    await backend.advance(60)
    assert await clean(backend, "failed", 120) == 1
    assert await backend.view(failed) is None


async def test_clean_works_in_bounded_batches_oldest_first(backend: Backend) -> None:
    ids = [await backend.enqueue() for _ in range(5)]
    for i in (2, 0, 4, 1, 3):  # finalized a second apart, in neither id order
        await backend.cancel(ids[i])
        await backend.advance(1)
    assert await elect(backend, "J", ttl=FOREVER)
    await backend.advance(61)

    assert await clean(backend, "cancelled", 60, batch=2) == 2
    assert [await backend.view(i) is None for i in ids] == [True, False, True, False, False]
    assert await clean(backend, "cancelled", 60, batch=2) == 2
    assert [await backend.view(i) is None for i in ids] == [True, True, True, False, True]
    assert await clean(backend, "cancelled", 60, batch=2) == 1
    assert await clean(backend, "cancelled", 60, batch=2) == 0


async def test_a_cleaner_that_does_not_lead_deletes_nothing(backend: Backend) -> None:
    task = await backend.enqueue()
    await backend.cancel(task)
    await backend.advance(61)
    assert await clean(backend, "cancelled", 60) == 0  # nobody leads
    assert await elect(backend, "K")
    assert await clean(backend, "cancelled", 60) == 0  # K leads
    await backend.advance(TTL + 1)
    assert await elect(backend, "J")
    await backend.advance(TTL + 1)
    assert await clean(backend, "cancelled", 60) == 0  # J's own lease has lapsed
    assert (await view(backend, task)).status == "cancelled"

    assert await elect(backend, "J")
    assert await clean(backend, "cancelled", 60) == 1
    assert await backend.view(task) is None
