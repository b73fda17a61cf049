"""Unique tasks against real PostgreSQL: keys, periods, states, batches, transactions, sync.

Tasks are settled (claimed, then completed or failed) through the production statements
(tests/helpers/state_db.py), so a row leaves its unique states exactly as it does under a
consumer.  Periods are tested with the database clock pinned (``asynqpg.clock_offset``),
never by waiting.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from asynqpg_trio import (
    Client,
    DuplicateTask,
    InvalidTask,
    Pool,
    Producer,
    SchemaMissing,
    Task,
    Unique,
    connect,
)
from asynqpg_trio import sync as sync_producer
from asynqpg_trio._core._state import Event
from asynqpg_trio._core._unique import derived_key
from tests.helpers import state_db as db

T = db.TYPE  # the type the state_db helpers claim
Conn = psycopg.AsyncConnection[Any]


def unique_rows(sync_conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(id, status, unique_key, unique_window, unique_states) of every task, by id."""
    return sync_conn.execute(
        "SELECT id, status, unique_key, unique_window, unique_states FROM asynqpg_tasks ORDER BY id"
    ).fetchall()


async def settle(conn: Conn, task_id: int, event: Event) -> None:
    """Claim ``task_id`` (type `T`, due) and write the handler's ``event`` for it."""
    claimed = {r["id"]: r["lease_token"] for r in await db.claim(conn, 100, 30.0)}
    await db.ack(conn, db.plan([db.outcome_for(event, task_id, claimed[task_id], 0.0)]))


async def duplicate_of(producer: Producer, task: Task, conn: Conn | None = None) -> int:
    """The id `DuplicateTask` reports for ``task`` (failing the test if it is inserted)."""
    with pytest.raises(DuplicateTask) as caught:
        await producer.enqueue(task, conn=conn)
    return caught.value.existing_id


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Unique(""), "unique.key"),
        (lambda: Unique("k" * 256), "unique.key"),
        (lambda: Unique(b"k"), "unique.key"),  # type: ignore[arg-type]
        (lambda: Unique("a\x00b"), "unique.key"),
        (lambda: Unique(period=0), "unique.period"),
        (lambda: Unique(period=-1.0), "unique.period"),
        (lambda: Unique(period=float("inf")), "unique.period"),
        (lambda: Unique(period=True), "unique.period"),
        (lambda: Unique(period=timedelta(days=40000)), "unique.period"),
        (lambda: Unique(states="pending"), "unique.states"),
        (lambda: Unique(states=("pending",)), "unique.states"),
        (lambda: Unique(states=("running", "completed")), "unique.states"),
        (lambda: Unique(states=("pending", "running", "done")), "unique.states"),
        (lambda: Unique(states=3), "unique.states"),  # type: ignore[arg-type]
    ],
)
def test_bad_unique_is_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(InvalidTask, match=field.replace(".", r"\.")):
        make()


def test_unique_is_a_normalised_value() -> None:
    a = Unique("k", period=timedelta(hours=1), states=["running", "completed", "pending"])
    assert a == Unique("k", period=3600, states=("pending", "running", "completed", "pending"))
    assert (a.key, a.period, a.states) == ("k", 3600.0, ("pending", "running", "completed"))
    assert Unique().states == ("pending", "running")
    assert hash(a) == hash(Unique("k", period=3600.0, states=a.states))


async def test_a_task_whose_unique_is_not_a_unique_is_refused(pool: Pool) -> None:
    producer = Producer(pool)
    with pytest.raises(InvalidTask, match=r"unique must be an asynqpg_trio\.Unique"):
        await producer.enqueue(Task(T, b"", unique="k"))  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match="index 1: unique must be") as caught:
        await producer.enqueue_many([Task(T, b""), Task(T, b"", unique={"key": "k"})])  # type: ignore[arg-type]
    assert caught.value.index == 1


# --- keys ------------------------------------------------------------------------------------


async def test_explicit_key_per_type(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    first = await producer.enqueue(Task(T, b"1", unique=Unique("user:42")))
    assert (
        await duplicate_of(producer, Task(T, b"other payload", unique=Unique("user:42"))) == first
    )
    other_type = await producer.enqueue(Task("other", b"1", unique=Unique("user:42")))
    other_key = await producer.enqueue(Task(T, b"1", unique=Unique("user:43")))
    plain = await producer.enqueue(Task(T, b"1"))  # a task without Unique is never blocked
    assert len({first, other_type, other_key, plain}) == 4
    assert [r[2] for r in unique_rows(sync_conn)] == ["user:42", "user:42", "user:43", None]


async def test_derived_key_is_the_payload_hash(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    first = await producer.enqueue(Task(T, b'{"n": 1}', unique=Unique()))
    with pytest.raises(DuplicateTask) as caught:
        await producer.enqueue(Task(T, b'{"n": 1}', unique=Unique()))
    assert caught.value.existing_id == first
    assert caught.value.unique_key == derived_key(b'{"n": 1}')
    assert caught.value.token is None
    assert "unique key 'sha256:" in str(caught.value)
    await producer.enqueue(Task(T, b'{"n": 2}', unique=Unique()))
    # An explicit key equal to the derived one is the same key.
    assert await duplicate_of(producer, Task(T, b"x", unique=Unique(derived_key(b'{"n": 1}')))) == (
        first
    )
    (row, _) = unique_rows(sync_conn)
    assert row[2] == "sha256:" + hashlib.sha256(b'{"n": 1}').hexdigest()
    assert (row[3], row[4]) == (None, 3)  # no period; pending and running


async def test_token_and_unique_on_one_task(pool: Pool) -> None:
    producer = Producer(pool)
    first = await producer.enqueue(Task(T, b"", idempotency_token="t", unique=Unique("k")))
    with pytest.raises(DuplicateTask) as by_token:
        await producer.enqueue(Task(T, b"", idempotency_token="t", unique=Unique("other")))
    assert (by_token.value.existing_id, by_token.value.token) == (first, "t")
    with pytest.raises(DuplicateTask) as by_key:
        await producer.enqueue(Task(T, b"", idempotency_token="u", unique=Unique("k")))
    assert (by_key.value.existing_id, by_key.value.unique_key) == (first, "k")


# --- periods ---------------------------------------------------------------------------------


async def test_period_allows_one_per_window_of_the_database_clock(dsn: str, sync_conn: Any) -> None:
    producer = Producer("host=unused")  # conn= is always given
    conn = await connect(dsn)
    hourly = Unique("report", period=3600)

    async def enqueue_at(at: float) -> int | None:
        """Enqueue at the pinned instant BASE + at seconds; None for a duplicate."""
        async with conn.transaction():
            await db.pin_clock(conn, at)
            try:
                return await producer.enqueue(Task(T, b"", unique=hourly), conn=conn)
            except DuplicateTask:
                return None

    try:
        first = await enqueue_at(0.0)  # BASE is midnight, so a window starts here
        assert await enqueue_at(1800.0) is None
        assert await enqueue_at(3599.999999) is None  # the window's last microsecond
        second = await enqueue_at(3600.0)
        assert await enqueue_at(7199.0) is None
        assert await enqueue_at(-0.000001) is not None  # the window before BASE
        assert first is not None and second is not None
        windows = {r[0]: r[3] for r in unique_rows(sync_conn)}
        assert windows[first] == db.instant(0.0)
        assert windows[second] == db.instant(3600.0)
        # Without a period the key is held across windows.
        async with conn.transaction():
            await db.pin_clock(conn, 0.0)
            forever = await producer.enqueue(Task(T, b"", unique=Unique("report")), conn=conn)
        assert await enqueue_at(3600.0 * 24) is not None  # another window: another task
        async with conn.transaction():
            await db.pin_clock(conn, 3600.0 * 24)
            assert (
                await duplicate_of(producer, Task(T, b"", unique=Unique("report")), conn) == forever
            )
    finally:
        await producer.aclose()
        await conn.close()


async def test_period_windows_count_from_the_unix_epoch(dsn: str, sync_conn: Any) -> None:
    conn = await connect(dsn)
    producer = Producer("host=unused")
    try:
        async with conn.transaction():
            await db.pin_clock(conn, 1000.5)  # 2030-01-01 00:16:40.5
            await producer.enqueue_many(
                [
                    Task(T, b"", unique=Unique("a", period=7)),
                    Task(T, b"", unique=Unique("b", period=timedelta(days=7))),
                    Task(T, b"", unique=Unique("c", period=0.25)),
                ],
                conn=conn,
            )
    finally:
        await producer.aclose()
        await conn.close()
    epoch = db.BASE - timedelta(seconds=db.BASE.timestamp())
    windows = [r[3] for r in unique_rows(sync_conn)]
    base_s = db.BASE.timestamp() + 1000.5
    assert windows[0] == epoch + timedelta(seconds=base_s - base_s % 7)
    # Weekly windows start on Thursdays at 00:00 UTC, as 1970-01-01 did.
    assert windows[1] == epoch + timedelta(seconds=base_s - base_s % 604800)
    assert windows[2] == db.instant(1000.5)


# --- states ------------------------------------------------------------------------------------


async def test_default_states_free_the_key_once_finished(dsn: str, pool: Pool) -> None:
    producer = Producer(pool)
    key = Unique("job")
    conn = await connect(dsn)
    try:
        first = await producer.enqueue(Task(T, b"", unique=key))
        await settle_claim_only(conn, first)  # running holds the key too
        assert await duplicate_of(producer, Task(T, b"", unique=key)) == first
        await complete(conn, first)
        second = await producer.enqueue(Task(T, b"", unique=key))  # completed: free
        await settle(conn, second, Event.FAIL)
        third = await producer.enqueue(Task(T, b"", unique=key))  # failed: free
        await Client(pool).cancel_task(third)
        fourth = await producer.enqueue(Task(T, b"", unique=key))  # cancelled: free
        assert len({first, second, third, fourth}) == 4
    finally:
        await conn.close()


async def settle_claim_only(conn: Conn, task_id: int) -> None:
    """Claim every due task of type `T`, ``task_id`` among them."""
    assert task_id in {r["id"] for r in await db.claim(conn, 100, 30.0)}


async def complete(conn: Conn, task_id: int) -> None:
    """Complete a task claimed by `settle_claim_only` (its lease token read back)."""
    cur = await conn.execute("SELECT lease_token FROM asynqpg_tasks WHERE id = %s", (task_id,))
    row = await cur.fetchone()
    assert row is not None
    await db.ack(conn, db.plan([db.outcome_for(Event.COMPLETE, task_id, row[0], 0.0)]))


@pytest.mark.parametrize("finished", ["completed", "failed", "cancelled"])
async def test_a_finished_state_among_the_states_keeps_the_key(
    dsn: str, pool: Pool, finished: str
) -> None:
    producer = Producer(pool)
    key = Unique("once", states=("pending", "running", finished))
    conn = await connect(dsn)
    try:
        first = await producer.enqueue(Task(T, b"", unique=key))
        if finished == "cancelled":
            await Client(pool).cancel_task(first)
        else:
            await settle(conn, first, Event.COMPLETE if finished == "completed" else Event.FAIL)
        assert await duplicate_of(producer, Task(T, b"", unique=key)) == first
        # The rule is the holder's: a task that does not keep finished ones is still refused.
        assert await duplicate_of(producer, Task(T, b"", unique=Unique("once"))) == first
        await Client(pool).delete_task(first)
        await producer.enqueue(Task(T, b"", unique=key))  # deleted: free
    finally:
        await conn.close()


# --- batches and transactions -----------------------------------------------------------------


async def test_batch_results_are_aligned(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    held = await producer.enqueue(Task(T, b"held", unique=Unique("held")))
    ids = await producer.enqueue_many(
        [
            Task(T, b"a", unique=Unique("held")),  # held by a row: None
            Task(T, b"b"),  # plain
            Task(T, b"c", unique=Unique("new")),
            Task(T, b"d", unique=Unique("new")),  # held by the batch's earlier task: None
            Task(T, b"e", idempotency_token="tok"),
            Task(T, b"f", idempotency_token="tok"),  # token duplicate inside the batch: None
            Task(T, b"g", unique=Unique()),
            Task(T, b"g", unique=Unique()),  # same payload: None
            Task("other", b"g", unique=Unique()),  # another type
            Task(T, b"h", unique=Unique("w", period=60)),
        ]
    )
    skipped = [i is None for i in ids]
    assert skipped == [True, False, False, True, False, True, False, True, False, False]
    new = [i for i in ids if i is not None]
    assert new == sorted(new) and held < new[0], "ids follow the input order"
    stored = {r[0]: r[1:] for r in sync_conn.execute("SELECT id, payload FROM asynqpg_tasks")}
    assert [stored[i][0] for i in new] == [b"b", b"c", b"e", b"g", b"g", b"h"]


async def test_duplicate_inside_a_transaction_keeps_it_usable_and_rollback_frees_the_key(
    dsn: str, pool: Pool
) -> None:
    producer = Producer(pool)
    conn = await connect(dsn, autocommit=False)
    try:
        async with conn.transaction(force_rollback=True):
            mine = await producer.enqueue(Task(T, b"", unique=Unique("tx")), conn=conn)
            assert await duplicate_of(producer, Task(T, b"", unique=Unique("tx")), conn) == mine
            await conn.execute("SELECT 1")  # the transaction was not aborted
        await conn.commit()
        # Rolled back: the key is free again, for this transaction and for others.
        await producer.enqueue(Task(T, b"", unique=Unique("tx")))
    finally:
        await conn.close()


def test_sync_twin(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            first = sync_producer.enqueue(conn, Task(T, b"", unique=Unique("s")))
            with pytest.raises(DuplicateTask) as caught:
                sync_producer.enqueue(conn, Task(T, b"", unique=Unique("s")))
            assert caught.value.existing_id == first
            ids = sync_producer.enqueue_many(
                conn,
                [
                    Task(T, b"1", unique=Unique("s")),
                    Task(T, b"2", unique=Unique("s2", period=10)),
                    Task(T, b"3", unique=Unique("s2", period=10)),
                ],
            )
        assert ids[0] is None and ids[1] is not None and ids[2] is None
        count = conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone()
        assert count == (2,)


# --- the schema --------------------------------------------------------------------------------


async def test_unique_inserts_wait_for_the_index(pool: Pool, sync_conn: Any) -> None:
    # As if migration 0004 were still building its index: plain tasks go in, unique ones are
    # refused rather than let in a duplicate that would break the build.
    sync_conn.execute("DROP INDEX asynqpg_tasks_unique_idx")
    producer = Producer(pool)
    await producer.enqueue(Task(T, b""))
    with pytest.raises(SchemaMissing, match="asynqpg_tasks_unique_idx is not built yet"):
        await producer.enqueue(Task(T, b"", unique=Unique("k")))
    assert sync_conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone() == (1,)


def test_rows_without_unique_columns_are_never_refused(sync_conn: Any) -> None:
    # Go producers' rows: the unique columns NULL, however many look alike.
    for _ in range(2):
        sync_conn.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
            " VALUES ('t', 'x', now(), 3)"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        sync_conn.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left, unique_key,"
            " unique_states) VALUES ('t', 'x', now(), 3, 'k', 1)"  # pending without running
        )
