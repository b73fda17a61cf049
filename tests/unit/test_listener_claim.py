"""The listener claims on a NOTIFY (through the fetcher's `Claimer`), on the fake.

No fetcher runs in these tests: a task reaching the lease channel was claimed by the listener.
The claimer dispatches only between `open` and `close`; a claim lost with the LISTEN
connection restarts the listener, which claims again on its next connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import psycopg
import pytest
import trio

from asynqpg_trio._consumer._buffer import LeaseReceiver, open_lease_buffer
from asynqpg_trio._consumer._fetcher import URGENT_ROOM, Claimer
from asynqpg_trio._consumer._listener import NEW_CHANNEL, serve_listener
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, config


@asynccontextmanager
async def working_through_priority_0(s: Shared) -> AsyncIterator[tuple[Claimer, LeaseReceiver]]:
    """An open claimer (capacity 2) whose last claim brought priority-0 tasks (three more
    wait), and the receiving end of its lease buffer."""
    cfg = config()
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = open_lease_buffer(cfg.limit(TYPE) + URGENT_ROOM)
    with send, receive:
        claimer.open({TYPE: send})
        for _ in range(5):
            s.db.enqueue(TYPE)
        async with claimer.lock:
            await claimer.claim(s.db.claim)
        yield claimer, receive


async def test_a_notify_claims_on_the_listeners_connection(
    autojump_clock: object, shared: Shared
) -> None:
    s, cfg = shared, config()
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = anyio.create_memory_object_stream[Lease](cfg.limit(TYPE))
    with send, receive:
        claimer.open({TYPE: send})
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_listener, s.db, s.wakeup, s.book, s.counters, claimer)
            task = s.db.enqueue(TYPE)
            s.db.notify(NEW_CHANNEL, "")
            with trio.fail_after(1):
                lease = await receive.receive()
            assert lease.task_id == task
            assert s.db.get(task).status is TaskStatus.RUNNING
            assert s.counters.claimed == 1
            nursery.cancel_scope.cancel()


async def test_no_claim_once_the_claimer_is_closed(autojump_clock: object, shared: Shared) -> None:
    s, cfg = shared, config()
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = anyio.create_memory_object_stream[Lease](cfg.limit(TYPE))
    with receive:
        claimer.open({TYPE: send})
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_listener, s.db, s.wakeup, s.book, s.counters, claimer)
            await claimer.close()  # the work's end: the lease channels close
            task = s.db.enqueue(TYPE)
            s.db.notify(NEW_CHANNEL, "")
            await trio.sleep(1)
            assert s.db.get(task).status is TaskStatus.PENDING  # left for the next consumer
            assert s.counters.claimed == 0
            assert s.wakeup.kicked  # the (stopped) fetcher was woken instead
            nursery.cancel_scope.cancel()
        with pytest.raises(anyio.EndOfStream):  # closed, and nothing was sent
            receive.receive_nowait()


async def test_a_lost_listen_connection_restarts_and_claims_again(
    autojump_clock: object, shared: Shared
) -> None:
    s, cfg = shared, config()
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = anyio.create_memory_object_stream[Lease](cfg.limit(TYPE))
    with send, receive:
        claimer.open({TYPE: send})
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_listener, s.db, s.wakeup, s.book, s.counters, claimer)
            first = s.db.enqueue(TYPE)
            s.db.fail_next("claim", psycopg.OperationalError("connection lost"))
            s.db.notify(NEW_CHANNEL, "")
            await trio.sleep(1)  # the claim failed: the listener restarts with back-off
            assert s.db.get(first).status is TaskStatus.PENDING  # the failed claim changed nothing
            assert s.counters.claimed == 0
            s.db.notify(NEW_CHANNEL, "")  # heard on the new connection
            with trio.fail_after(1):
                lease = await receive.receive()
            assert lease.task_id == first
            nursery.cancel_scope.cancel()


async def test_an_urgent_notify_claims_beside_a_claim_in_flight_within_its_room(
    autojump_clock: object, shared: Shared
) -> None:
    s, cfg = shared, config()  # two workers, no prefetch: a capacity of 2
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = open_lease_buffer(cfg.limit(TYPE) + URGENT_ROOM)
    with send, receive:
        claimer.open({TYPE: send})
        backlog = [s.db.enqueue(TYPE) for _ in range(5)]
        async with claimer.lock:
            await claimer.claim(s.db.claim)  # the consumer works through priority 0
        urgent = [s.db.enqueue(TYPE, priority=5) for _ in range(URGENT_ROOM + 2)]
        mid = s.db.enqueue(TYPE, priority=3)
        async with claimer.lock:  # the fetcher's claim is in flight
            await claimer.on_notify(s.db.claim, 5)
            await claimer.on_notify(s.db.claim, 5)  # no room is left for a second one
            assert claimer.eager  # the fetcher's next claim takes whatever room there is
        got = [receive.receive_nowait().task_id for _ in range(cfg.limit(TYPE) + URGENT_ROOM)]
        with pytest.raises(anyio.WouldBlock):
            receive.receive_nowait()
    # The urgent ones first (never below the announced priority), then what was held.
    assert got == urgent[:URGENT_ROOM] + backlog[:2]
    assert s.db.get(mid).status is TaskStatus.PENDING
    assert s.db.get(urgent[-1]).status is TaskStatus.PENDING
    assert sum(s.book.busy.values()) == cfg.limit(TYPE) + URGENT_ROOM


async def test_an_announced_priority_no_more_urgent_than_the_work_claims_nothing_extra(
    autojump_clock: object, shared: Shared
) -> None:
    s, cfg = shared, config()
    claimer = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    send, receive = open_lease_buffer(cfg.limit(TYPE) + URGENT_ROOM)
    with send, receive:
        claimer.open({TYPE: send})
        for _ in range(5):
            s.db.enqueue(TYPE, priority=2)
        async with claimer.lock:
            await claimer.claim(s.db.claim)
        s.db.enqueue(TYPE, priority=2)
        async with claimer.lock:
            await claimer.on_notify(s.db.claim, 2)
        assert not claimer.eager
        assert sum(s.book.busy.values()) == cfg.limit(TYPE)


async def test_an_urgent_claim_leaves_the_consumer_listening_for_the_next_urgent_task(
    autojump_clock: object, shared: Shared
) -> None:
    # The rows of an urgent claim are urgent by construction: they must not make the claimer
    # believe it now works on urgent tasks, or the next urgent task waits for a regular claim.
    s = shared
    async with working_through_priority_0(s) as (claimer, receive):
        first = s.db.enqueue(TYPE, priority=5)
        async with claimer.lock:  # the fetcher's claim is in flight
            await claimer.on_notify(s.db.claim, 5)
        second = s.db.enqueue(TYPE, priority=5)
        async with claimer.lock:  # and the next one
            await claimer.on_notify(s.db.claim, 5)
        got = [receive.receive_nowait().task_id for _ in range(2)]
    assert got == [first, second]  # each urgent task claimed at once, most urgent first
    assert s.db.get(second).status is TaskStatus.RUNNING


async def test_a_notify_while_draining_a_backlog_wakes_the_fetcher_instead_of_claiming(
    autojump_clock: object, shared: Shared
) -> None:
    # Draining a backlog, the fetcher claims again as soon as there is room: a large claim on
    # the listener's connection would only hold up the notices behind it (an urgent task's, a
    # cancel).  An urgent one still gets its small claim at once.
    s = shared
    async with working_through_priority_0(s) as (claimer, receive):
        s.wakeup.backlogged.add(TYPE)  # as the fetcher marks a type that got all it asked
        for _ in range(config().limit(TYPE)):  # its handlers finish: room for a claim
            s.book.finished(receive.receive_nowait())
        claimed = s.counters.claimed
        s.wakeup.kicked = False
        await claimer.on_notify(s.db.claim, None)
        assert s.counters.claimed == claimed  # nothing claimed on the listener's connection
        assert s.wakeup.kicked  # the fetcher was woken instead
        urgent = s.db.enqueue(TYPE, priority=5)
        await claimer.on_notify(s.db.claim, 5)
        assert receive.receive_nowait().task_id == urgent  # claimed at once, all the same
        assert s.counters.claimed == claimed + 1
