"""The listener claims on a NOTIFY (through the fetcher's `Claimer`), on the fake.

No fetcher runs in these tests: a task reaching the lease channel was claimed by the listener.
The claimer dispatches only between `open` and `close`; a claim lost with the LISTEN
connection restarts the listener, which claims again on its next connection.
"""

from __future__ import annotations

import anyio
import psycopg
import pytest
import trio

from asynqpg_trio._consumer._fetcher import Claimer
from asynqpg_trio._consumer._listener import NEW_CHANNEL, serve_listener
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, config


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
