"""The completer on the fake, in virtual time: batches by size and by age; stale and failed
writes."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import psycopg
import trio

from asynqpg_trio._consumer._completer import Completer
from asynqpg_trio._core._adaptive import MAX_FLUSH_DELAY
from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.streams.memory import MemoryObjectSendStream


async def claimed(shared: Shared, n: int) -> list[Lease]:
    """Enqueue and claim ``n`` tasks; their leases, in the book."""
    for _ in range(n):
        shared.db.enqueue(TYPE)
    rows = await shared.db.claim(
        ClaimPlan.of({TYPE: n}),
        owner="unit",
        lease=30.0,
        takeover_message="",
        exhausted_message="",
        grace=1,
    )
    leases = []
    for row in rows:
        assert row.lease_token is not None
        lease = Lease(row.id, row.lease_token, TYPE)
        shared.book.add(lease)
        leases.append(lease)
    return leases


@asynccontextmanager
async def completer(
    shared: Shared, batch_size: int = 3, batch_interval: float | None = 2.0
) -> AsyncIterator[MemoryObjectSendStream[Outcome]]:
    """Run a completer; yield its outcome channel (closing it lets the final flush run)."""
    cfg = config(batch_size=batch_size, batch_interval=batch_interval)
    c = Completer(cfg, shared.db, shared.book, shared.counters, shared.telemetry)
    send, receive = anyio.create_memory_object_stream[Outcome](batch_size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.run, receive)
        with send:
            yield send


def done(lease: Lease) -> Outcome:
    return Outcome(lease.task_id, lease.token, OutcomeKind.COMPLETE)


def finalized_at(shared: Shared, lease: Lease) -> float | None:
    return shared.db.get(lease.task_id).finalized_at


async def test_a_full_batch_is_written_at_once(autojump_clock: object, shared: Shared) -> None:
    leases = await claimed(shared, 3)
    start = trio.current_time()
    async with completer(shared, batch_size=3) as outcomes:
        for lease in leases:
            await outcomes.send(done(lease))
        await trio.sleep(0.001)
        assert [finalized_at(shared, x) for x in leases] == [start] * 3
    assert shared.counters.completed == 3
    assert not shared.book.leases


async def test_a_partial_batch_waits_for_batch_interval(
    autojump_clock: object, shared: Shared
) -> None:
    leases = await claimed(shared, 2)
    start = trio.current_time()
    async with completer(shared, batch_size=3, batch_interval=2.0) as outcomes:
        await outcomes.send(done(leases[0]))
        await trio.sleep(1.0)
        await outcomes.send(done(leases[1]))
        await trio.sleep(0.5)
        assert shared.db.get(leases[0].task_id).status is TaskStatus.RUNNING
        await trio.sleep(1.0)
        # Both went when the older had waited batch_interval.
        assert [finalized_at(shared, x) for x in leases] == [start + 2.0] * 2


async def test_adaptive_interval_writes_an_idle_outcome_at_once(
    autojump_clock: object, shared: Shared
) -> None:
    leases = await claimed(shared, 2)
    start = trio.current_time()
    async with completer(shared, batch_size=100, batch_interval=None) as outcomes:
        await outcomes.send(done(leases[0]))
        await trio.sleep(1.0)  # idle: no batch to wait for (well under a millisecond)
        first = finalized_at(shared, leases[0])
        assert first is not None and start <= first < start + 0.001
        await outcomes.send(done(leases[1]))
        await trio.sleep(0.01)
        second = finalized_at(shared, leases[1])
        assert second is not None and start + 1.0 <= second < start + 1.001


async def test_adaptive_interval_batches_a_fast_stream(
    autojump_clock: object, shared: Shared
) -> None:
    leases = await claimed(shared, 60)
    start = trio.current_time()
    async with completer(shared, batch_size=1000, batch_interval=None) as outcomes:
        for lease in leases:  # 60 outcomes within 6 ms: 10,000 per second
            await outcomes.send(done(lease))
            await trio.sleep(0.0001)
        await trio.sleep(0.001)
        # The rate rose, so the delay did: the later outcomes wait for their batch.
        assert shared.db.get(leases[-1].task_id).status is TaskStatus.RUNNING
        await trio.sleep(0.1)  # never longer than MAX_FLUSH_DELAY
        assert all(shared.db.get(x.task_id).status is TaskStatus.COMPLETED for x in leases)
    (written,) = {finalized_at(shared, x) for x in leases}  # one batch
    # Written after the stream (6 ms) ended, once the rate (and the delay with it) fell, and
    # never later than the longest delay.
    assert written is not None and start + 0.006 <= written <= start + MAX_FLUSH_DELAY


async def test_the_final_flush_writes_what_is_left(autojump_clock: object, shared: Shared) -> None:
    (lease,) = await claimed(shared, 1)
    start = trio.current_time()
    async with completer(shared, batch_interval=60.0) as outcomes:
        await outcomes.send(done(lease))
    assert finalized_at(shared, lease) == start  # closing the channel flushed it


async def test_a_stale_outcome_is_counted_not_written(
    autojump_clock: object, shared: Shared
) -> None:
    (lease,) = await claimed(shared, 1)
    shared.db.cancel(lease.task_id)
    async with completer(shared) as outcomes:
        await outcomes.send(done(lease))
    assert shared.db.get(lease.task_id).status is TaskStatus.CANCELLED
    assert (shared.counters.stale_acks, shared.counters.completed) == (1, 0)
    assert not shared.book.leases


async def test_a_failed_write_is_retried(autojump_clock: object, shared: Shared) -> None:
    (lease,) = await claimed(shared, 1)
    shared.db.fail_next("write_outcomes", psycopg.OperationalError("connection lost"))
    start = trio.current_time()
    async with completer(shared, batch_size=1) as outcomes:
        await outcomes.send(done(lease))
    assert shared.counters.actor_restarts == 1
    assert finalized_at(shared, lease) == start + 0.05  # after the first back-off
