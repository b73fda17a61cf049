"""What a consumer says when it is unwell: leases lost while their handler ran, outcomes
written too late (stale acknowledgements) and an event loop that stopped running (a handler
that blocks), each logged with the task and counted; against real PostgreSQL."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
import trio

from asynqpg_trio import Handler, Pool, Producer, Task, TaskInfo, open_consumer
from asynqpg_trio._consumer._shared import Counters
from asynqpg_trio._core._book import LeaseBook
from asynqpg_trio._core._config import build_config
from asynqpg_trio._telemetry._telemetry import Telemetry

from .helpers.waiting import wait_until

FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def take_over(sync_conn: Any, task_id: int) -> None:
    """What another consumer's claim does to a lease it found expired."""
    sync_conn.execute(
        "UPDATE asynqpg_tasks SET lease_token = nextval('asynqpg_lease_token_seq'),"
        " lease_owner = 'other' WHERE id = %s",
        (task_id,),
    )


async def test_lost_lease_is_logged_and_counted_but_a_cancel_is_not(
    pool: Pool, sync_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await Producer(pool).enqueue_many([Task("s", b"lost"), Task("s", b"cancelled")])
    lost_id, cancelled_id = (i for i in ids if i is not None)
    started: set[bytes] = set()

    async def handle(task: TaskInfo) -> None:
        started.add(task.payload)
        await anyio.sleep_forever()

    async with open_consumer(
        pool, handlers={"s": handle}, cancel_check_interval=0.1, **FAST
    ) as consumer:
        await wait_until(lambda: len(started) == 2)
        # One is cancelled by a client (no NOTIFY: the periodic check finds it), the other
        # taken over by another consumer.
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET status = 'cancelled', lease_token = NULL,"
            " lease_owner = NULL, finalized_at = now() WHERE id = %s",
            (cancelled_id,),
        )
        take_over(sync_conn, lost_id)
        await wait_until(lambda: consumer.statistics().cancelled == 2)
    assert consumer.statistics().leases_lost == 1
    (message,) = (m for m in warnings(caplog) if "lease" in m)
    assert f"task {lost_id} ('s')" in message
    assert "taken over by consumer other" in message


async def test_stale_ack_is_logged(
    pool: Pool, sync_conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await Producer(pool).enqueue(Task("s", b""))

    async def handle(task: TaskInfo) -> None:
        take_over(sync_conn, task.id)  # before this handler's outcome is written

    async with open_consumer(
        pool, handlers={"s": handle}, cancel_check_interval=60, lease_duration=300, **FAST
    ) as consumer:
        await wait_until(lambda: consumer.statistics().stale_acks == 1)
    (message,) = warnings(caplog)
    assert f"task {task_id} ('s')" in message and "stale" in message


async def test_a_blocked_event_loop_is_reported_with_the_blocking_type(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await Producer(pool).enqueue_many([Task("blocker", b""), Task("polite", b"")])

    async def block(task: TaskInfo) -> None:
        time.sleep(0.8)  # the fault: blocking the event loop

    async def polite(task: TaskInfo) -> None:
        await anyio.sleep(0)

    async with open_consumer(
        pool, handlers={"blocker": block, "polite": polite}, stall_threshold=0.2, **FAST
    ) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 2)
        await wait_until(lambda: consumer.statistics().loop_stalls >= 1)
    stalls = [m for m in warnings(caplog) if "event loop" in m]
    assert stalls, warnings(caplog)
    assert "'blocker'" in stalls[0]


async def test_watchdog_measures_the_loop_clock(autojump_clock: trio.testing.MockClock) -> None:
    """Under a virtual clock only a jump of the loop clock while the loop is held (a stall as
    the loop sees it) is reported; long sleeps are not."""

    from asynqpg_trio._consumer._watchdog import run_watchdog

    async def nothing(task: TaskInfo) -> None:
        pass

    config = build_config(
        {"t": Handler(nothing)},
        (),
        consumer_id="c",
        poll_interval=1.0,
        prefetch=None,
        shutdown_timeout=1.0,
        flush_timeout=1.0,
        lease_duration=4.0,
        cancel_check_interval=1.0,
        batch_size=10,
        batch_interval=0.01,
        max_backlog=10,
        message_limit=100,
        stall_threshold=None,
    )
    assert config.stall_threshold == 1.0  # a quarter of the lease
    counters = Counters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_watchdog, config.stall_threshold, LeaseBook(), counters, Telemetry())
        await trio.sleep(3600)  # a virtual hour of idle loop: no stall
        assert counters.loop_stalls == 0
        autojump_clock.jump(5.0)  # five seconds pass without the loop running anything
        await trio.sleep(1)
        assert counters.loop_stalls == 1
        nursery.cancel_scope.cancel()
