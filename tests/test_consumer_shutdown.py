"""Shutdown stays bounded when a handler ignores cancellation: the consumer abandons it,
reports the tasks it leaves to the janitor, and those are rescued once their leases expire;
against real PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import trio

from asynqpg_trio import Handler, Pool, Producer, Task, TaskInfo, open_consumer, open_pool

from .helpers.waiting import wait_until

FAST: dict[str, Any] = {"poll_interval": 0.1, "maintenance": False, "batch_interval": 0.01}


def row(sync_conn: Any, task_id: int) -> tuple[Any, ...]:
    found = sync_conn.execute(
        "SELECT status, attempts_elapsed, lease_owner, messages FROM asynqpg_tasks WHERE id = %s",
        (task_id,),
    ).fetchone()
    assert found is not None
    return tuple(found)


class Stubborn:
    """A handler that shields itself from cancellation until `release` is set."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.ended = anyio.Event()

    async def __call__(self, task: TaskInfo) -> None:
        self.started.set()
        try:
            with anyio.CancelScope(shield=True):
                await self.release.wait()
        finally:
            self.ended.set()

    async def release_later(self, seconds: float) -> None:
        """The hang guard: without the fix the consumer's exit waits for this."""
        await anyio.sleep(seconds)
        self.release.set()


async def test_shielded_handler_is_abandoned_at_the_bound_and_rescued(
    pool: Pool, sync_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await Producer(pool).enqueue(Task("stubborn", b""))
    stubborn = Stubborn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stubborn.release_later, 30)
        async with open_consumer(
            pool,
            handlers={"stubborn": Handler(stubborn, timeout=None)},
            shutdown_timeout=0.2,
            flush_timeout=0.3,
            lease_duration=1,
            consumer_id="first",
            **FAST,
        ) as consumer:
            await stubborn.started.wait()
        # The consumer returned while its handler still ignored cancellation.
        assert not stubborn.ended.is_set()
        assert consumer.statistics().abandoned == 1
        left = [r.getMessage() for r in caplog.records if "left to the janitor" in r.getMessage()]
        assert len(left) == 1 and "1 task" in left[0]
        assert row(sync_conn, task_id)[:3] == ("running", 1, "first")
        stubborn.release.set()
        await stubborn.ended.wait()  # its outcome goes nowhere: the consumer is gone
        nursery.cancel_scope.cancel()

    # Nothing is lost: once the lease expires another consumer takes the task over.
    async def finish(task: TaskInfo) -> None:
        pass

    async with open_consumer(
        pool, handlers={"stubborn": finish}, consumer_id="second", **FAST
    ) as second:
        await wait_until(lambda: second.statistics().completed >= 1, timeout=20)
    assert second.statistics().lease_takeovers == 1
    status, attempts, _, messages = row(sync_conn, task_id)
    assert (status, attempts, len(messages)) == ("completed", 2, 1)
    assert messages[0].startswith("lease expired")


async def test_stop_now_does_not_wait_for_a_shielded_handler(
    pool: Pool, sync_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await Producer(pool).enqueue(Task("stubborn", b""))
    stubborn = Stubborn()

    async def stop_now_soon(consumer: Any) -> None:
        await trio.sleep(0.2)
        consumer.stop_now()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stubborn.release_later, 30)
        async with open_consumer(
            pool,
            handlers={"stubborn": stubborn},
            shutdown_timeout=60,
            flush_timeout=60,
            **FAST,
        ) as consumer:
            await stubborn.started.wait()
            nursery.start_soon(stop_now_soon, consumer)
        assert not stubborn.ended.is_set()  # a 120 s grace, cut short by stop_now
        assert consumer.statistics().abandoned == 1
        assert any(
            "left to the janitor" in r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING
        )
        stubborn.release.set()
        await stubborn.ended.wait()
        nursery.cancel_scope.cancel()


async def test_stop_now_before_the_block_ends(pool: Pool, sync_conn: Any) -> None:
    """stop_now called before the shutdown starts (a second signal racing the first one's
    wake-up) still cuts it short."""
    await Producer(pool).enqueue(Task("stubborn", b""))
    stubborn = Stubborn()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stubborn.release_later, 30)
        async with open_consumer(
            pool, handlers={"stubborn": stubborn}, shutdown_timeout=60, **FAST
        ) as consumer:
            await stubborn.started.wait()
            consumer.stop_now()
        assert not stubborn.ended.is_set()
        assert consumer.statistics().abandoned == 1
        stubborn.release.set()
        await stubborn.ended.wait()
        nursery.cancel_scope.cancel()


async def test_a_clean_shutdown_leaves_nothing(pool: Pool, sync_conn: Any) -> None:
    await Producer(pool).enqueue_many([Task("t", b"") for _ in range(20)])

    async def handle(task: TaskInfo) -> None:
        await anyio.sleep(0.01)

    async with open_consumer(pool, handlers={"t": handle}, **FAST) as consumer:
        await wait_until(lambda: consumer.statistics().completed >= 20, timeout=20)
    assert consumer.statistics().abandoned == 0


def test_a_shielded_handler_is_abandoned_on_asyncio_too(dsn: str, sync_conn: Any) -> None:
    async def scenario() -> None:
        async with open_pool(dsn, max_size=8) as pool:
            await Producer(pool).enqueue(Task("stubborn", b""))
            stubborn = Stubborn()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stubborn.release_later, 30)
                async with open_consumer(
                    pool,
                    handlers={"stubborn": stubborn},
                    shutdown_timeout=0.2,
                    flush_timeout=0.3,
                    **FAST,
                ) as consumer:
                    await stubborn.started.wait()
                assert not stubborn.ended.is_set()
                assert consumer.statistics().abandoned == 1
                stubborn.release.set()
                await stubborn.ended.wait()
                tg.cancel_scope.cancel()

    anyio.run(scenario, backend="asyncio")
    assert row(sync_conn, 1)[0] == "running"  # left to the janitor
