"""The lease keeper on the fake, in virtual time: renews every third of the lease, marks lost
leases and cancels their handlers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from asynqpg_trio._consumer._lease_keeper import run_lease_keeper
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LEASE = 30.0


async def hold(shared: Shared, *, lease: float = LEASE, owner: str = "unit") -> Lease:
    """Enqueue and claim one task; its lease, in the book, with a handler scope running."""
    shared.db.enqueue(TYPE)
    (row,) = await shared.db.claim(
        ClaimPlan.of({TYPE: 1}),
        owner=owner,
        lease=lease,
        takeover_message="",
        exhausted_message="",
        grace=1,
    )
    assert row.lease_token is not None
    held = Lease(row.id, row.lease_token, TYPE, scope=trio.CancelScope())
    shared.book.add(held)
    return held


@asynccontextmanager
async def keeper(shared: Shared, cancel_check_interval: float = 60.0) -> AsyncIterator[None]:
    cfg = config(lease_duration=LEASE, cancel_check_interval=cancel_check_interval)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run_lease_keeper, cfg, shared.db, shared.book, shared.counters, shared.telemetry
        )
        yield
        nursery.cancel_scope.cancel()


async def test_it_renews_every_third_of_the_lease(autojump_clock: object, shared: Shared) -> None:
    start = trio.current_time()
    lease = await hold(shared)
    async with keeper(shared):
        expiries = []
        await trio.sleep(0.5)  # sample between renewals
        for _ in range(6):
            await trio.sleep(LEASE / 3)
            expiries.append(shared.db.get(lease.task_id).blocked_till - start)
        # Ten virtual minutes later the task is still ours: nobody can take it over.
        await trio.sleep(600.0)
        assert (
            await shared.db.claim(
                ClaimPlan.of({TYPE: 1}),
                owner="other",
                lease=LEASE,
                takeover_message="",
                exhausted_message="",
                grace=1,
            )
            == []
        )
    assert expiries == [LEASE + k * LEASE / 3 for k in range(1, 7)]
    assert not lease.lost


async def test_a_cancelled_task_is_marked_lost_and_its_handler_cancelled(
    autojump_clock: object, shared: Shared
) -> None:
    lease = await hold(shared)
    async with keeper(shared, cancel_check_interval=1.0):
        shared.db.cancel(lease.task_id)
        await trio.sleep(1.5)
        assert lease.lost
        assert isinstance(lease.scope, trio.CancelScope)
        assert lease.scope.cancel_called
    assert shared.counters.leases_lost == 0  # a client's cancel is no loss


async def test_a_lease_taken_over_is_lost(autojump_clock: object, shared: Shared) -> None:
    lease = await hold(shared, lease=1.0)  # expires before the keeper's first renewal
    await trio.sleep(2.0)
    (taken,) = await shared.db.claim(
        ClaimPlan.of({TYPE: 1}),
        owner="other",
        lease=LEASE,
        takeover_message="",
        exhausted_message="",
        grace=1,
    )
    assert taken.taken_over
    async with keeper(shared):
        await trio.sleep(LEASE / 3 + 0.1)
        assert lease.lost
        assert isinstance(lease.scope, trio.CancelScope)
        assert lease.scope.cancel_called
    assert shared.counters.leases_lost == 1
    assert shared.db.get(lease.task_id).status is TaskStatus.RUNNING  # the other holds it
