"""The producer against real PostgreSQL: validation, transactions, idempotency, batches, NOTIFY."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from asynqpg_trio import (
    ConfigurationError,
    DuplicateTask,
    InvalidTask,
    Pool,
    Producer,
    Task,
    connect,
)
from asynqpg_trio import sync as sync_producer


def rows(sync_conn: psycopg.Connection[Any], where: str = "TRUE") -> list[tuple[Any, ...]]:
    return sync_conn.execute(
        "SELECT id, type, payload, idempotency_token, status, attempts_left, attempts_elapsed,"
        f" blocked_till - created_at FROM asynqpg_tasks WHERE {where} ORDER BY id"
    ).fetchall()


async def test_enqueue_writes_go_compatible_row(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    task_id = await producer.enqueue(Task("email:send", b'{"to": "a@b"}', max_retry=5))
    (row,) = rows(sync_conn)
    assert row[:7] == (task_id, "email:send", b'{"to": "a@b"}', None, "pending", 5, 0)
    assert row[7] == timedelta(0)  # ready now, by the database clock


async def test_default_max_retry_and_zero_means_once(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool, default_max_retry=7)
    await producer.enqueue(Task("a", b""))
    await producer.enqueue(Task("a", b"", max_retry=0))
    assert [r[5] for r in rows(sync_conn)] == [7, 1]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (Task("", b"x"), "type must not be empty"),
        (Task("x" * 256, b"x"), "256 characters"),
        (Task("a", "text"), "payload must be bytes"),  # type: ignore[arg-type]
        (Task("a", b"x", delay=-1), "non-negative"),
        (Task("a", b"x", delay=float("nan")), "finite"),
        (Task("a", b"x", max_retry=-1), "between 0 and 32767"),
        (Task("a", b"x", max_retry=40000), "between 0 and 32767"),
        (Task("a", b"x", process_at=datetime(2030, 1, 1)), "timezone-aware"),
        (Task("a", b"x", idempotency_token=""), "must not be empty"),
        (Task("a\x00b", b"x"), "NUL"),
    ],
)
async def test_validation(pool: Pool, sync_conn: Any, task: Task, message: str) -> None:
    producer = Producer(pool)
    with pytest.raises(InvalidTask, match=message):
        await producer.enqueue(task)
    with pytest.raises(InvalidTask, match="index 1") as info:
        await producer.enqueue_many([Task("ok", b""), task, Task("ok", b"")])
    assert info.value.index == 1
    assert rows(sync_conn) == []


def test_bad_producer_config() -> None:
    with pytest.raises(ConfigurationError):
        Producer("host=x", default_max_retry=-1)
    with pytest.raises(TypeError):
        Producer(42)  # type: ignore[arg-type]


async def test_delay_and_process_at_use_database_clock(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    await producer.enqueue(Task("a", b"", delay=90))
    await producer.enqueue(Task("a", b"", delay=timedelta(minutes=5)))
    await producer.enqueue(Task("a", b"", delay=90, process_at=datetime(2000, 1, 1, tzinfo=UTC)))
    (db_now,) = sync_conn.execute("SELECT now()").fetchone()
    at = db_now + timedelta(hours=2)
    await producer.enqueue(Task("a", b"", process_at=at))
    got = [r[7] for r in rows(sync_conn)]
    assert got[:3] == [timedelta(seconds=90), timedelta(minutes=5), timedelta(0)]
    (blocked,) = sync_conn.execute(
        "SELECT blocked_till FROM asynqpg_tasks ORDER BY id DESC"
    ).fetchone()
    assert blocked == at


async def test_duplicate_token_raises_with_existing_id(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    first = await producer.enqueue(Task("a", b"1", idempotency_token="tok"))
    with pytest.raises(DuplicateTask) as info:
        await producer.enqueue(Task("a", b"2", idempotency_token="tok"))
    assert info.value.existing_id == first
    # Tokens are unique per type.
    other = await producer.enqueue(Task("b", b"3", idempotency_token="tok"))
    assert other != first
    assert len(rows(sync_conn)) == 2


async def test_enqueue_many_maps_results_in_input_order(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    existing = await producer.enqueue(Task("a", b"old", idempotency_token="t1"))
    result = await producer.enqueue_many(
        [
            Task("a", b"n1"),
            Task("a", b"dup-existing", idempotency_token="t1"),
            Task("a", b"n2", idempotency_token="t2"),
            Task("a", b"dup-in-batch", idempotency_token="t2"),
            Task("b", b"n3"),
        ]
    )
    assert result[1] is None
    assert result[3] is None
    ids = [r for r in result if r is not None]
    assert existing not in ids
    assert len(set(ids)) == 3
    payloads = {r[0]: r[2] for r in rows(sync_conn)}
    assert payloads[result[0]] == b"n1"
    assert payloads[result[2]] == b"n2"
    assert payloads[result[4]] == b"n3"
    assert await producer.enqueue_many([]) == []


async def test_transaction_commit_and_rollback(pool: Pool, sync_conn: Any) -> None:
    sync_conn.execute("CREATE TABLE orders (id int)")
    producer = Producer(pool)
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (1)")
            await producer.enqueue(Task("order:ship", b"1"), conn=conn)
            # Not visible to others before commit.
            assert rows(sync_conn) == []
        assert len(rows(sync_conn)) == 1
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (2)")
                await producer.enqueue_many([Task("order:ship", b"2")] * 3, conn=conn)
                raise RuntimeError("business failure")
    assert len(rows(sync_conn)) == 1
    assert sync_conn.execute("SELECT array_agg(id) FROM orders").fetchone() == ([1],)


async def test_duplicate_in_transaction_does_not_abort_it(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    await producer.enqueue(Task("a", b"", idempotency_token="k"))
    async with pool.connection() as conn, conn.transaction():
        with pytest.raises(DuplicateTask):
            await producer.enqueue(Task("a", b"", idempotency_token="k"), conn=conn)
        await producer.enqueue(Task("a", b"after"), conn=conn)
    assert len(rows(sync_conn)) == 2


async def test_hundred_thousand_in_one_call(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        ids = await producer.enqueue_many(
            [Task("bulk", b"%d" % i) for i in range(100_000)], conn=conn
        )
    assert len(ids) == 100_000
    assert all(i is not None for i in ids)
    assert ids == sorted(ids)  # type: ignore[type-var]
    assert sync_conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone() == (100_000,)
    first = sync_conn.execute(
        "SELECT payload FROM asynqpg_tasks WHERE id = %s", (ids[0],)
    ).fetchone()
    last = sync_conn.execute(
        "SELECT payload FROM asynqpg_tasks WHERE id = %s", (ids[-1],)
    ).fetchone()
    assert (first, last) == ((b"0",), (b"99999",))
    del cur


async def test_notify_once_per_statement_and_only_when_ready(dsn: str, pool: Pool) -> None:
    listener = await connect(dsn)
    try:
        await listener.execute("LISTEN asynqpg_new")
        producer = Producer(pool)
        await producer.enqueue_many([Task("a", b"") for _ in range(50)])
        got = [n async for n in listener.notifies(timeout=0.5)]
        assert len(got) == 1
        await producer.enqueue(Task("later", b"", delay=3600))
        got = [n async for n in listener.notifies(timeout=0.3)]
        assert got == []
    finally:
        await listener.close()


async def test_producer_with_dsn_owns_its_pool(dsn: str, sync_conn: Any) -> None:
    async with Producer(dsn) as producer:
        await producer.enqueue(Task("a", b""))
    assert len(rows(sync_conn)) == 1


def test_sync_twin_in_django_style_transaction(dsn: str, sync_conn: Any) -> None:
    sync_conn.execute("CREATE TABLE orders (id int)")
    with psycopg.connect(dsn) as conn:  # not autocommit, like Django's atomic blocks
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            task_id = sync_producer.enqueue(conn, Task("order:ship", b"1", idempotency_token="o1"))
            ids = sync_producer.enqueue_many(
                conn, [Task("x", b""), Task("order:ship", b"", idempotency_token="o1")]
            )
        assert ids[1] is None
        with pytest.raises(DuplicateTask) as info:
            sync_producer.enqueue(conn, Task("order:ship", b"1", idempotency_token="o1"))
        assert info.value.existing_id == task_id
        conn.rollback()
        with pytest.raises(ZeroDivisionError), conn.transaction():
            sync_producer.enqueue(conn, Task("gone", b""))
            raise ZeroDivisionError
        with pytest.raises(InvalidTask, match="index 0"):
            sync_producer.enqueue_many(conn, [Task("", b"")])
    assert [r[1] for r in rows(sync_conn)] == ["order:ship", "x"]


async def test_concurrent_enqueues_of_same_token(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await producer.enqueue(Task("race", b"", idempotency_token="same"))
            outcomes.append("new")
        except DuplicateTask:
            outcomes.append("dup")

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert sorted(outcomes) == ["dup"] * 5 + ["new"]
    assert len(rows(sync_conn)) == 1
