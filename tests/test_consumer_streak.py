"""Handler actors run queued tasks in streaks under one cancel scope: each task still gets its
own deadline, its own metadata and its own cancellation, against real PostgreSQL."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg

from asynqpg_trio import (
    ConstantRetryPolicy,
    Handler,
    Pool,
    Producer,
    Task,
    TaskInfo,
    get_task_id,
    open_consumer,
)

from .helpers.waiting import wait_until

FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}


def statuses(sync_conn: psycopg.Connection[Any], ids: list[Any]) -> list[str]:
    rows = dict(
        sync_conn.execute(
            "SELECT id, status FROM asynqpg_tasks WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    return [str(rows[i]) for i in ids]


async def test_deadline_moves_to_each_task(pool: Pool, sync_conn: Any) -> None:
    # One actor, eight tasks of 0.1 s under a 0.4 s timeout: together they outlast it, so a
    # deadline left from an earlier task of the streak would time a later one out.
    ids = await Producer(pool).enqueue_many([Task("t", b"") for _ in range(8)])
    seen: list[int | None] = []

    async def handle(task: TaskInfo) -> None:
        seen.append(get_task_id())
        await anyio.sleep(0.1)

    async with open_consumer(
        pool, handlers={"t": Handler(handle, workers=1, timeout=0.4)}, **FAST
    ) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 8)
    assert statuses(sync_conn, ids) == ["completed"] * 8
    assert sorted(i for i in seen if i is not None) == ids  # each saw its own metadata


async def test_timeout_in_a_streak_hits_that_task_only(pool: Pool, sync_conn: Any) -> None:
    payloads = [b"fast", b"hang", b"fast", b"hang", b"fast", b"fast"]
    ids = await Producer(pool).enqueue_many([Task("t", p, max_retry=1) for p in payloads])
    ran: list[tuple[int, bytes]] = []

    async def handle(task: TaskInfo) -> None:
        ran.append((task.id, task.payload))
        if task.payload == b"hang":
            await anyio.sleep_forever()
        await anyio.sleep(0)

    async with open_consumer(
        pool,
        handlers={"t": Handler(handle, workers=1, timeout=0.3)},
        retry_policy=ConstantRetryPolicy(600),
        **FAST,
    ) as consumer:
        await wait_until(lambda: (s := consumer.statistics()).completed + s.failed == 6)
    expected = ["failed" if p == b"hang" else "completed" for p in payloads]
    assert statuses(sync_conn, ids) == expected
    assert [task_id for task_id, _ in ran] == ids  # in order, one actor
    messages = sync_conn.execute(
        "SELECT messages[1] FROM asynqpg_tasks WHERE id = ANY(%s) ORDER BY id",
        ([ids[1], ids[3]],),
    ).fetchall()
    assert all("timed out after 0.3 s" in m for (m,) in messages)


async def test_remote_cancel_in_a_streak_spares_the_next_tasks(pool: Pool, sync_conn: Any) -> None:
    payloads = [b"fast", b"long", b"fast", b"fast"]
    ids = await Producer(pool).enqueue_many([Task("t", p) for p in payloads])
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        if task.payload == b"long":
            started.set()
            await anyio.sleep_forever()

    async with open_consumer(
        pool,
        handlers={"t": Handler(handle, workers=1, timeout=120)},
        cancel_check_interval=30,
        **FAST,
    ) as consumer:
        await started.wait()
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET status = 'cancelled', finalized_at = now(),"
            " lease_token = NULL, lease_owner = NULL WHERE id = %s",
            (ids[1],),
        )
        sync_conn.execute("SELECT pg_notify('asynqpg_cancel', %s)", (str(ids[1]),))
        await wait_until(
            lambda: (s := consumer.statistics()).cancelled == 1 and s.completed == 3, timeout=5
        )
    assert statuses(sync_conn, ids) == ["completed", "cancelled", "completed", "completed"]
