"""The fetcher on the fake, in virtual time: claims into free slots, wakes on a kick, polls."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import trio

from asynqpg_trio import Handler
from asynqpg_trio._consumer._fetcher import run_fetcher
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, claimer, config, do_nothing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.streams.memory import MemoryObjectReceiveStream

    from asynqpg_trio._core._config import ConsumerConfig


@asynccontextmanager
async def fetcher(
    shared: Shared, cfg: ConsumerConfig
) -> AsyncIterator[MemoryObjectReceiveStream[Lease]]:
    """Run the fetcher alone; yield the channel its leases go to (no handler reads it)."""
    s = shared
    send, receive = anyio.create_memory_object_stream[Lease](cfg.limit(TYPE))
    with send, receive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_fetcher, cfg, s.db, claimer(s, cfg, {TYPE: send}))
            yield receive
            nursery.cancel_scope.cancel()


def statuses(shared: Shared) -> list[TaskStatus]:
    return [t.status for t in shared.db.rows()]


async def test_claims_only_into_free_slots(autojump_clock: object, shared: Shared) -> None:
    for _ in range(5):
        shared.db.enqueue(TYPE)
    cfg = config(Handler(do_nothing, workers=2), prefetch=0)
    async with fetcher(shared, cfg) as leases:
        await trio.sleep(1.0)
        assert statuses(shared).count(TaskStatus.RUNNING) == 2
        assert shared.book.busy[TYPE] == 2
        assert shared.wakeup.backlogged == {TYPE}  # it got all it asked for
        # A handler takes a task and finishes it: a slot frees and the backlog kicks.
        shared.book.finished(await leases.receive())
        shared.wakeup.kick()
        await trio.sleep(0.001)
        assert statuses(shared).count(TaskStatus.RUNNING) == 3
    assert shared.counters.claimed == 3


async def test_a_kick_wakes_it_before_the_poll(autojump_clock: object, shared: Shared) -> None:
    async with fetcher(shared, config(poll_interval=60.0)):
        await trio.sleep(1.0)  # idle: nothing to claim
        task = shared.db.enqueue(TYPE)  # no NOTIFY reaches it (no listener runs)
        await trio.sleep(10.0)
        assert shared.db.get(task).status is TaskStatus.PENDING
        kicked = trio.current_time()
        shared.wakeup.kick()
        await trio.sleep(0.001)
        row = shared.db.get(task)
    assert row.status is TaskStatus.RUNNING
    assert row.attempted_at == kicked


async def test_it_polls_at_poll_interval(autojump_clock: object, shared: Shared) -> None:
    start = trio.current_time()
    async with fetcher(shared, config(poll_interval=5.0)):
        await trio.sleep(1.0)
        task = shared.db.enqueue(TYPE)  # nobody kicks
        await trio.sleep(10.0)
    attempted_at = shared.db.get(task).attempted_at
    assert attempted_at == start + 5.0


async def test_it_wakes_when_a_delayed_task_is_due(autojump_clock: object, shared: Shared) -> None:
    start = trio.current_time()
    task = shared.db.enqueue(TYPE, delay=2.0)
    async with fetcher(shared, config(poll_interval=60.0)):
        await trio.sleep(10.0)
    attempted_at = shared.db.get(task).attempted_at
    assert attempted_at == start + 2.0
