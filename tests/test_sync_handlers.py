"""Sync handlers against real PostgreSQL: outcomes as for async handlers, the task metadata in
the thread, the event loop free while a thread blocks, and a bounded shutdown past a thread
that never returns."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import pytest
import trio

from asynqpg_trio import (
    ConstantRetryPolicy,
    Handler,
    Pool,
    Producer,
    SkipRetry,
    Task,
    TaskInfo,
    TaskSnooze,
    get_task_metadata,
    open_consumer,
)

from .helpers.waiting import wait_until

FAST: dict[str, Any] = {"poll_interval": 0.1, "maintenance": False, "batch_interval": 0.01}


def status(sync_conn: psycopg.Connection[Any], task_id: int) -> tuple[Any, ...]:
    found = sync_conn.execute(
        "SELECT status, attempts_elapsed, messages FROM asynqpg_tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert found is not None
    return tuple(found)


async def test_outcomes_and_metadata_as_for_async_handlers(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    ids = await producer.enqueue_many(
        [
            Task("t", b"ok"),
            Task("t", b"skip", max_retry=3),
            Task("t", b"snooze-once"),
            Task("t", b"error", max_retry=2),
        ]
    )
    seen: dict[int, Any] = {}
    threads: set[int] = set()
    snoozed: set[int] = set()

    def handle(task: TaskInfo) -> None:  # a plain function: it runs in a worker thread
        meta = get_task_metadata()
        seen[task.id] = None if meta is None else (meta.id, meta.retry_count)
        threads.add(threading.get_ident())
        if task.payload == b"skip":
            raise SkipRetry("bad payload")
        if task.payload == b"snooze-once" and task.id not in snoozed:
            snoozed.add(task.id)
            raise TaskSnooze(0.05)
        if task.payload == b"error":
            raise ValueError("it broke")

    async with open_consumer(
        pool, handlers={"t": handle}, retry_policy=ConstantRetryPolicy(0.05), **FAST
    ) as consumer:
        await wait_until(
            lambda: consumer.statistics().completed + consumer.statistics().failed >= 4
        )
        stats = consumer.statistics()
    assert (stats.completed, stats.failed, stats.retried, stats.snoozed) == (2, 2, 1, 1)
    ok, skip, snooze, error = (status(sync_conn, i) for i in ids)  # type: ignore[arg-type]
    assert ok == ("completed", 1, [])
    assert skip[:2] == ("failed", 1) and skip[2][0].startswith("SkipRetry: bad payload")
    assert snooze == ("completed", 1, [])  # a snooze uses no attempt and stores no message
    assert error[:2] == ("failed", 2) and error[2][1].startswith("ValueError: it broke")
    assert seen == {
        ids[0]: (ids[0], 0),
        ids[1]: (ids[1], 0),
        ids[2]: (ids[2], 0),
        ids[3]: (ids[3], 1),
    }
    assert threading.get_ident() not in threads


async def test_a_blocking_sync_handler_does_not_block_the_event_loop(
    pool: Pool, sync_conn: Any
) -> None:
    producer = Producer(pool)
    blocked = await producer.enqueue(Task("block", b""))
    quick = await producer.enqueue_many([Task("quick", b"") for _ in range(5)])
    release, started = threading.Event(), threading.Event()
    ran: list[int] = []

    def block(task: TaskInfo) -> None:
        started.set()
        release.wait(timeout=30)  # the hang guard of a broken test

    async def handle_quick(task: TaskInfo) -> None:
        await trio.sleep(0)
        ran.append(task.id)

    handlers: dict[str, Any] = {"block": Handler(block, timeout=None), "quick": handle_quick}
    async with open_consumer(pool, handlers=handlers, **FAST) as consumer:
        await wait_until(started.is_set, what="the blocking handler to start")
        await producer.enqueue_many([Task("quick", b"") for _ in range(5)])  # later work too
        await wait_until(lambda: len(ran) == 10, what="the async handlers, meanwhile")
        assert status(sync_conn, blocked)[0] == "running"
        assert all(status(sync_conn, i)[0] == "completed" for i in quick)  # type: ignore[arg-type]
        release.set()
        await wait_until(lambda: consumer.statistics().completed == 11)
    assert status(sync_conn, blocked)[:2] == ("completed", 1)


async def test_shutdown_stays_bounded_past_a_thread_that_never_returns(
    pool: Pool, sync_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await Producer(pool).enqueue(Task("hang", b""))
    release, started, ended = threading.Event(), threading.Event(), threading.Event()

    def hang(task: TaskInfo) -> None:
        started.set()
        try:
            release.wait(timeout=60)  # "forever", but a broken test ends
        finally:
            ended.set()

    try:
        async with open_consumer(
            pool,
            handlers={"hang": Handler(hang, timeout=None)},
            shutdown_timeout=0.2,
            flush_timeout=1.0,
            **FAST,
        ) as consumer:
            await wait_until(started.is_set, what="the handler to start")
        # The consumer returned, its shutdown bounded, while the thread still runs: the
        # handler was cut short at the end of the grace and its task released.
        assert not ended.is_set()
        assert consumer.statistics().abandoned == 0
        assert consumer.statistics().released == 1
        assert status(sync_conn, task_id) == ("pending", 0, [])
        assert any(
            "handler thread is abandoned" in r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING
        )
    finally:
        release.set()
