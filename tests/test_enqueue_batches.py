"""Batch enqueue against real PostgreSQL: uniform columns sent as scalars, varying ones as arrays.

`plan_batch` sends a column as one value when every task shares it and as an array otherwise,
and checks plain batches column by column; these tests pin the rows the database ends up with
for batches that mix both shapes, and for batches the per-task path plans.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from asynqpg_trio import InvalidTask, Pool, Producer, Task, connect
from asynqpg_trio import sync as sync_producer

FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
PAST = datetime(2000, 1, 1, tzinfo=UTC)


def stored(sync_conn: psycopg.Connection[Any], ids: list[int | None]) -> list[tuple[Any, ...]]:
    """(type, payload, token, attempts_left, delay or blocked_till, trace) for each id."""
    out: list[Any] = []
    for task_id in ids:
        row = sync_conn.execute(
            "SELECT type, payload, idempotency_token, attempts_left,"
            " CASE WHEN blocked_till > created_at + interval '1 year' THEN blocked_till::text"
            " ELSE (blocked_till - created_at)::text END, trace_context"
            " FROM asynqpg_tasks WHERE id = %s",
            (task_id,),
        ).fetchone()
        out.append(row)
    return out


# Each case: a batch and the stored (type, payload, token, attempts, wait, trace) per task.
MIXED = [
    Task("a", b"0"),
    Task("a", b"1", idempotency_token="k1", max_retry=7),
    Task("b", b"2", delay=90),
    Task("a", b"3", delay=timedelta(minutes=5)),
    Task("a", b"4", process_at=FUTURE, delay=30),
    Task("a", b"5", process_at=PAST),
    Task("c", b"6", max_retry=0),
    Task("a", b"7"),
]
MIXED_ROWS = [
    ("a", b"0", None, 3, "00:00:00", None),
    ("a", b"1", "k1", 7, "00:00:00", None),
    ("b", b"2", None, 3, "00:01:30", None),
    ("a", b"3", None, 3, "00:05:00", None),
    ("a", b"4", None, 3, "2100-01-01 00:00:00+00", None),
    ("a", b"5", None, 3, "00:00:00", None),
    ("c", b"6", None, 1, "00:00:00", None),
    ("a", b"7", None, 3, "00:00:00", None),
]
UNIFORM = [Task("u", b"%d" % i, delay=60, max_retry=9) for i in range(5)]
UNIFORM_ROWS = [("u", b"%d" % i, None, 9, "00:01:00", None) for i in range(5)]
AT = [Task("t", b"%d" % i, process_at=FUTURE, idempotency_token=f"k{i}") for i in range(3)]
AT_ROWS = [("t", b"%d" % i, f"k{i}", 3, "2100-01-01 00:00:00+00", None) for i in range(3)]


@pytest.mark.parametrize(
    ("batch", "expected"),
    [(MIXED, MIXED_ROWS), (UNIFORM, UNIFORM_ROWS), (AT, AT_ROWS)],
    ids=["mixed", "uniform-options", "uniform-process-at-varying-tokens"],
)
async def test_rows_match_each_task(
    pool: Pool, sync_conn: Any, batch: list[Task], expected: list[tuple[Any, ...]]
) -> None:
    ids = await Producer(pool).enqueue_many(batch)
    assert None not in ids
    assert ids == sorted(ids)  # type: ignore[type-var]
    assert stored(sync_conn, ids) == expected
    (count,) = sync_conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone()
    assert count == len(batch)


def test_sync_twin_plans_the_same_rows(sync_conn: Any, dsn: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        ids = sync_producer.enqueue_many(conn, MIXED)
    assert stored(sync_conn, ids) == MIXED_ROWS


async def test_per_task_path_gives_the_same_rows(pool: Pool, sync_conn: Any) -> None:
    class Sub(Task):
        __slots__ = ()

    # bytearray and memoryview payloads, a Task subclass: not plain, checked task by task.
    batch = [
        Task("a", bytearray(b"0")),  # type: ignore[arg-type]
        Sub("a", b"1", idempotency_token="k1", max_retry=7),
        Task("b", memoryview(b"2"), delay=90),  # type: ignore[arg-type]
    ]
    ids = await Producer(pool).enqueue_many(batch)
    assert stored(sync_conn, ids) == MIXED_ROWS[:3]


async def test_uniform_token_keeps_only_the_first(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    ids = await producer.enqueue_many(
        [Task("a", b"%d" % i, idempotency_token="same") for i in range(4)]
    )
    assert ids[0] is not None
    assert ids[1:] == [None, None, None]
    again = await producer.enqueue_many([Task("a", b"x", idempotency_token="same")] * 2)
    assert again == [None, None]
    assert stored(sync_conn, ids[:1]) == [("a", b"0", "same", 3, "00:00:00", None)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Task("a", b"", delay=False), "delay must be seconds"),  # False == 0.0, still refused
        (Task("a", b"", max_retry=True), "max_retry must be an int"),  # True == 1
        (Task("a", b"", idempotency_token=["k"]), "must be a str"),  # type: ignore[arg-type]
        (Task(["a"], b""), "type must be a str"),  # type: ignore[arg-type]
        (Task("a", b"", process_at=datetime(2030, 1, 1)), "timezone-aware"),
    ],
)
async def test_invalid_task_in_plain_batch_names_its_index(
    pool: Pool, sync_conn: Any, bad: Task, message: str
) -> None:
    batch = [Task("a", b"", delay=0, max_retry=1)] * 3 + [bad, Task("a", b"")]
    with pytest.raises(InvalidTask, match=message) as info:
        await Producer(pool).enqueue_many(batch)
    assert info.value.index == 3
    assert sync_conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone() == (0,)


async def test_notify_when_any_task_is_ready_now(dsn: str, pool: Pool) -> None:
    listener = await connect(dsn)
    try:
        await listener.execute("LISTEN asynqpg_new")
        producer = Producer(pool)
        await producer.enqueue_many([Task("a", b"", delay=3600) for _ in range(5)])
        await producer.enqueue_many([Task("a", b"", process_at=FUTURE)] * 3)
        assert [n async for n in listener.notifies(timeout=0.3)] == []
        await producer.enqueue_many([Task("a", b"", delay=3600), Task("a", b""), Task("a", b"")])
        assert len([n async for n in listener.notifies(timeout=0.5)]) == 1
    finally:
        await listener.close()


async def test_mixed_batch_in_callers_transaction(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    async with pool.connection() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await producer.enqueue_many(MIXED, conn=conn)
                raise RuntimeError("rolled back")
        async with conn.transaction():
            ids = await producer.enqueue_many(MIXED, conn=conn)
    assert stored(sync_conn, ids) == MIXED_ROWS


async def test_concurrent_batches_map_ids_to_their_own_inputs(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    results: dict[int, list[int | None]] = {}

    async def one(k: int) -> None:
        results[k] = await producer.enqueue_many(
            [Task("c", b"%d-%d" % (k, i)) for i in range(2000)]
        )

    async with anyio.create_task_group() as tg:
        for k in range(3):
            tg.start_soon(one, k)
    for k, ids in results.items():
        payloads = dict(
            sync_conn.execute(
                "SELECT id, payload FROM asynqpg_tasks WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        )
        assert [payloads[i] for i in ids] == [b"%d-%d" % (k, i) for i in range(2000)]
