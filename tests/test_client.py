"""The client against real PostgreSQL: reads, state errors, transactions, paging, bulk, stats."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest

from asynqpg_trio import (
    PayloadTooLarge,
    Pool,
    Producer,
    Task,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskNotFound,
    TaskRunning,
    TaskSummary,
)
from asynqpg_trio._api._client import Client
from asynqpg_trio._core._errors import InvalidQuery
from asynqpg_trio._core._listing import MAX_LIMIT, plan_list
from asynqpg_trio._core._row import TaskStatus
from asynqpg_trio._core._state import Event, allowed_pairs

SyncConn = psycopg.Connection[Any]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make(
    sync_conn: SyncConn,
    status: str = "pending",
    *,
    type: str = "t",
    attempts_left: int = 2,
    created_at: datetime | None = None,
    blocked_till: str = "asynqpg_now()",
) -> int:
    """Insert a task in any status with consistent columns; return its id."""
    running = status == "running"
    final = status in ("completed", "failed", "cancelled")
    row = sync_conn.execute(
        f"""INSERT INTO asynqpg_tasks (type, payload, status, messages, blocked_till,
               attempts_left, attempts_elapsed, created_at, finalized_at, attempted_at,
               lease_token, lease_owner)
           VALUES (%s, %s, %s, %s, {blocked_till}, %s, 1, coalesce(%s, asynqpg_now()),
               CASE WHEN %s THEN asynqpg_now() END, asynqpg_now(),
               CASE WHEN %s THEN nextval('asynqpg_lease_token_seq') END,
               CASE WHEN %s THEN 'consumer-1' END)
           RETURNING id""",
        (type, b"p", status, ["boom"], attempts_left, created_at, final, running, running),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(sync_conn: SyncConn, task_id: int) -> str | None:
    row = sync_conn.execute("SELECT status FROM asynqpg_tasks WHERE id = %s", (task_id,)).fetchone()
    return None if row is None else str(row[0])


async def test_get_task_reads_every_column(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = await Producer(pool).enqueue(Task("email", b"\x00\xff", idempotency_token="k"))
    running = make(sync_conn, "running")
    client = Client(pool)
    task = await client.get_task(task_id)
    assert (task.id, task.type, task.payload, task.status) == (
        task_id,
        "email",
        b"\x00\xff",
        "pending",
    )
    assert task.status is TaskStatus.PENDING
    assert (task.idempotency_token, task.messages, task.attempts_left, task.attempts_elapsed) == (
        "k",
        (),
        3,
        0,
    )
    assert task.blocked_till == task.created_at == task.updated_at
    assert task.blocked_till.tzinfo is not None
    assert (task.finalized_at, task.attempted_at, task.lease_token, task.lease_owner) == (None,) * 4
    lease = await client.get_task(running)
    assert lease.lease_token is not None
    assert (lease.lease_owner, lease.messages) == ("consumer-1", ("boom",))


async def test_get_task_bad_ids(pool: Pool) -> None:
    client = Client(pool)
    for missing in (12345, 0, -1, 2**63):
        with pytest.raises(TaskNotFound) as info:
            await client.get_task(missing)
        assert info.value.task_id == missing
    for bad in ("1", 1.0, True, None):
        with pytest.raises(InvalidQuery, match="must be an int"):
            await client.get_task(bad)  # type: ignore[arg-type]


async def test_every_write_agrees_with_the_state_table(pool: Pool, sync_conn: SyncConn) -> None:
    """cancel / retry / delete from every status: the SQL does exactly what _state allows,
    and the refusals are the documented errors."""
    client = Client(pool)
    allowed = set(allowed_pairs())
    expected_error = {
        (Event.CANCEL, "completed"): TaskAlreadyFinalized,
        (Event.MANUAL_RETRY, "pending"): TaskAlreadyAvailable,
        (Event.MANUAL_RETRY, "running"): TaskRunning,
        (Event.MANUAL_RETRY, "completed"): TaskAlreadyFinalized,
        (Event.DELETE, "running"): TaskRunning,
    }
    after = {Event.CANCEL: "cancelled", Event.MANUAL_RETRY: "pending", Event.DELETE: None}
    methods = {
        Event.CANCEL: client.cancel_task,
        Event.MANUAL_RETRY: client.retry_task,
        Event.DELETE: client.delete_task,
    }
    for event, method in methods.items():
        for status in TaskStatus:
            task_id = make(sync_conn, status.value)
            error = expected_error.get((event, status.value))
            assert ((event, status) in allowed) == (error is None), (event, status)
            if error is None:
                await method(task_id)
                assert status_of(sync_conn, task_id) == after[event], (event, status)
            else:
                with pytest.raises(error) as info:
                    await method(task_id)
                assert status_of(sync_conn, task_id) == status.value
                assert info.value.task.id == task_id  # type: ignore[attr-defined]
                assert info.value.task.status == status  # type: ignore[attr-defined]
            with pytest.raises(TaskNotFound):
                await method(987654)


async def test_cancel_semantics(pool: Pool, sync_conn: SyncConn) -> None:
    client = Client(pool)
    sync_conn.execute("LISTEN asynqpg_cancel")
    pending, running, failed = (make(sync_conn, s) for s in ("pending", "running", "failed"))
    failed_at = (await client.get_task(failed)).finalized_at

    task = await client.cancel_task(pending)
    assert task.status is TaskStatus.CANCELLED
    assert task.finalized_at is not None
    assert list(sync_conn.notifies(timeout=0.2)) == []  # only running tasks notify

    task = await client.cancel_task(running)
    assert (task.status, task.lease_token, task.lease_owner) == ("cancelled", None, None)
    assert task.messages == ("boom",)
    (note,) = list(sync_conn.notifies(timeout=2, stop_after=1))
    assert (note.channel, note.payload) == ("asynqpg_cancel", str(running))

    task = await client.cancel_task(failed)
    assert task.finalized_at == failed_at  # kept, not overwritten
    again = await client.cancel_task(failed)  # idempotent: no error, no change
    assert again == task


async def test_cancel_in_caller_transaction_rolls_back(pool: Pool, sync_conn: SyncConn) -> None:
    client = Client(pool)
    sync_conn.execute("LISTEN asynqpg_cancel")
    task_id = make(sync_conn, "running")
    async with pool.connection() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                task = await client.cancel_task(task_id, conn=conn)
                assert task.status is TaskStatus.CANCELLED
                assert (await client.get_task(task_id, conn=conn)).status == "cancelled"
                assert status_of(sync_conn, task_id) == "running"  # not visible outside
                raise RuntimeError("roll back")
        assert status_of(sync_conn, task_id) == "running"
        assert list(sync_conn.notifies(timeout=0.2)) == []  # no NOTIFY on rollback
        async with conn.transaction():
            await client.cancel_task(task_id, conn=conn)
    assert status_of(sync_conn, task_id) == "cancelled"
    assert len(list(sync_conn.notifies(timeout=2, stop_after=1))) == 1


async def test_retry_semantics(pool: Pool, sync_conn: SyncConn) -> None:
    client = Client(pool)
    sync_conn.execute("LISTEN asynqpg_new")
    exhausted = make(
        sync_conn, "failed", attempts_left=0, blocked_till="asynqpg_now() - '1h'::interval"
    )
    spare = make(sync_conn, "cancelled", attempts_left=2)
    task = await client.retry_task(exhausted)
    (db_now,) = sync_conn.execute("SELECT asynqpg_now()").fetchone()  # type: ignore[misc]
    assert task.status is TaskStatus.PENDING
    assert (task.attempts_left, task.attempts_elapsed, task.messages) == (1, 1, ("boom",))
    assert task.finalized_at is None
    assert timedelta(0) <= db_now - task.blocked_till < timedelta(seconds=5)
    assert len(list(sync_conn.notifies(timeout=2, stop_after=1))) == 1
    assert (await client.retry_task(spare)).attempts_left == 2


async def test_delete_returns_the_row_as_it_was(pool: Pool, sync_conn: SyncConn) -> None:
    client = Client(pool)
    task_id = make(sync_conn, "completed")
    before = await client.get_task(task_id)
    assert await client.delete_task(task_id) == before
    assert status_of(sync_conn, task_id) is None
    running = make(sync_conn, "running")
    with pytest.raises(TaskRunning, match="cancel it first"):
        await client.delete_task(running)
    assert status_of(sync_conn, running) == "running"


async def test_list_filters_and_total(pool: Pool, sync_conn: SyncConn) -> None:
    ids = {
        "a_pending": make(sync_conn, "pending", type="a", created_at=T0),
        "a_failed": make(sync_conn, "failed", type="a", created_at=T0 + timedelta(hours=1)),
        "b_failed": make(sync_conn, "failed", type="b", created_at=T0 + timedelta(hours=2)),
        "b_done": make(sync_conn, "completed", type="b", created_at=T0 + timedelta(hours=3)),
    }
    client = Client(pool)

    async def listed(**kwargs: Any) -> list[int]:
        return [t.id for t in (await client.list_tasks(**kwargs)).tasks]

    assert await listed() == sorted(ids.values())
    assert await listed(statuses=["failed"]) == [ids["a_failed"], ids["b_failed"]]
    assert await listed(statuses=TaskStatus.FAILED, types="b") == [ids["b_failed"]]
    assert await listed(statuses=[], types=[], ids=[]) == sorted(ids.values())  # empty = none
    assert await listed(ids=[ids["b_done"], ids["a_pending"]]) == [ids["a_pending"], ids["b_done"]]
    # Both bounds are inclusive.
    window = {"created_after": T0 + timedelta(hours=1), "created_before": T0 + timedelta(hours=2)}
    assert await listed(**window) == [ids["a_failed"], ids["b_failed"]]
    assert await listed(order_by="created_at", descending=True) == sorted(ids.values())[::-1]

    page = await client.list_tasks(types=["a", "b"], limit=1, offset=1)
    assert (page.total, [t.id for t in page.tasks]) == (4, [ids["a_failed"]])
    empty = await client.list_tasks(offset=100)
    assert (empty.tasks, empty.total, empty.next_cursor) == ((), 4, None)
    assert len((await client.list_tasks(limit=0)).tasks) == 1  # clamped up to 1


async def test_records_carry_queue_and_priority_and_lists_filter_by_queue(
    pool: Pool, sync_conn: SyncConn
) -> None:
    producer = Producer(pool)
    plain = await producer.enqueue(Task("t", b"a"))
    mail = await producer.enqueue(Task("t", b"b", queue="mail", priority=5))
    slow = await producer.enqueue(Task("t", b"c", queue="slow", priority=-5))
    client = Client(pool)
    record = await client.get_task(mail)
    summary = await client.get_task_summary(slow)
    assert (record.queue, record.priority) == ("mail", 5)
    assert (summary.queue, summary.priority) == ("slow", -5)

    async def listed(**kwargs: Any) -> list[tuple[int, str, int]]:
        page = await client.list_tasks(**kwargs)
        return [(t.id, t.queue, t.priority) for t in page.tasks]

    assert await listed(queues="mail") == [(mail, "mail", 5)]
    assert await listed(queues=["default", "slow"]) == [(plain, "default", 0), (slow, "slow", -5)]
    assert await listed(queues=[]) == await listed()  # empty = no filter
    assert await listed(queues="nowhere") == []
    # Every write returns the row with its queue and priority.
    assert (await client.cancel_task(slow)).queue == "slow"
    assert (await client.retry_task(slow)).priority == -5
    assert (await client.delete_task(slow)).queue == "slow"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statuses": ["done"]}, "valid statuses are pending, running, completed, failed"),
        ({"created_after": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"created_before": "2024-01-01"}, "must be a datetime"),
        ({"offset": -1}, "offset must not be negative"),
        ({"order_by": "payload"}, "choose one of id, created_at, updated_at, blocked_till"),
        ({"order_by": "id; DROP TABLE asynqpg_tasks"}, "cannot order by"),
        ({"ids": [0]}, "task ids must be ints"),
        ({"types": [1]}, "types must be strings"),
        ({"limit": "10"}, "limit must be an int"),
        ({"after": "not-a-cursor"}, "malformed page cursor"),
        ({"offset": 2**63}, "offset must be at most 9223372036854775807"),
        ({"types": ["a\x00b"]}, "invalid type 'a\\\\x00b': task types cannot contain NUL"),
        ({"queues": [1]}, "queues must be strings"),
        ({"queues": "a\x00b"}, "invalid queue 'a\\\\x00b': queue names cannot contain NUL"),
        ({"queues": ["q" * 129]}, "invalid queue 'qqqq.*': queue names are 1 to 128 characters"),
        ({"after": "W1" * 200}, "malformed page cursor 'W1W1W1W1W1W1W1W1W1W1"),
    ],
)
async def test_list_rejects_bad_arguments(pool: Pool, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        await Client(pool).list_tasks(**kwargs)


async def test_bulk_refuses_nul_in_the_type(pool: Pool) -> None:
    for bulk in (Client(pool).retry_failed, Client(pool).delete_failed):
        with pytest.raises(InvalidQuery, match="task types cannot contain NUL characters"):
            await bulk("a\x00")


def test_limit_is_clamped() -> None:
    def plan(limit: int) -> int:
        return plan_list(
            statuses=None, types=None, ids=None, created_after=None, created_before=None,
            order_by="id", descending=False, limit=limit, offset=0, after=None,
        ).limit  # fmt: skip

    assert (plan(-5), plan(0), plan(100), plan(10**9)) == (1, 1, 100, MAX_LIMIT)


async def test_offset_pages_are_stable_on_ties(pool: Pool, sync_conn: SyncConn) -> None:
    """Every row has the same created_at: id breaks the tie, so pages neither overlap nor skip."""
    ids = [make(sync_conn, created_at=T0) for _ in range(10)]
    client = Client(pool)
    for descending in (False, True):
        seen: list[int] = []
        for offset in range(0, 10, 3):
            page = await client.list_tasks(
                order_by="created_at", descending=descending, limit=3, offset=offset
            )
            seen += [t.id for t in page.tasks]
        assert seen == sorted(ids, reverse=descending)


@pytest.mark.parametrize("order_by", ["id", "created_at", "updated_at", "blocked_till"])
async def test_keyset_pagination(pool: Pool, sync_conn: SyncConn, order_by: str) -> None:
    ids = [make(sync_conn, created_at=T0 + timedelta(minutes=i % 3)) for i in range(9)]
    sync_conn.execute("UPDATE asynqpg_tasks SET updated_at = created_at, blocked_till = created_at")
    client = Client(pool)
    for descending in (False, True):
        expected = sorted(ids, key=lambda i: ((i - ids[0]) % 3, i), reverse=descending)
        if order_by == "id":
            expected = sorted(ids, reverse=descending)
        seen: list[int] = []
        cursor = None
        while True:
            page = await client.list_tasks(
                order_by=order_by, descending=descending, limit=4, after=cursor
            )
            assert page.total == 9
            seen += [t.id for t in page.tasks]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == expected


async def test_keyset_survives_concurrent_writes(pool: Pool, sync_conn: SyncConn) -> None:
    ids = [make(sync_conn) for _ in range(6)]
    client = Client(pool)
    first = await client.list_tasks(limit=3)
    assert first.next_cursor is not None
    # Delete a row already seen and one ahead; offset paging would now skip a row.
    sync_conn.execute("DELETE FROM asynqpg_tasks WHERE id = ANY(%s)", ([ids[0], ids[4]],))
    new = make(sync_conn)
    rest = await client.list_tasks(limit=10, after=first.next_cursor)
    assert [t.id for t in rest.tasks] == [ids[3], ids[5], new]
    assert rest.next_cursor is None
    with pytest.raises(InvalidQuery, match="ordered by id ascending"):
        await client.list_tasks(after=first.next_cursor, descending=True)
    with pytest.raises(InvalidQuery, match="not both"):
        await client.list_tasks(after=first.next_cursor, offset=3)


class RecordingCursor(psycopg.AsyncCursor[Any]):
    """A cursor that keeps every row it hands out, to see what a query really returned."""

    rows: ClassVar[list[Any]] = []

    async def fetchall(self) -> list[Any]:
        rows = await super().fetchall()
        RecordingCursor.rows.extend(rows)
        return rows


async def test_lists_carry_no_payload_bytes(pool: Pool, sync_conn: SyncConn) -> None:
    """A list reads every payload's size, never a payload (issue 16, item 7): 20 tasks of
    10 MB made a 7 KB page cost 400 MB."""
    big = make(sync_conn)
    sync_conn.execute(
        "UPDATE asynqpg_tasks SET payload = decode(repeat('ab', 300000), 'hex') WHERE id = %s",
        (big,),
    )
    small = make(sync_conn)
    assert not {f.name for f in dataclasses.fields(TaskSummary)} & {"payload"}
    RecordingCursor.rows = []
    async with pool.connection() as conn:
        conn.cursor_factory = RecordingCursor
        try:
            page = await Client(pool).list_tasks(conn=conn)
        finally:
            conn.cursor_factory = psycopg.AsyncCursor
    assert [(t.id, t.payload_size) for t in page.tasks] == [(big, 300_000), (small, 1)]
    assert all(isinstance(t, TaskSummary) for t in page.tasks)
    values = [value for row in RecordingCursor.rows for value in row]
    assert RecordingCursor.rows and not [v for v in values if isinstance(v, bytes | memoryview)]


async def test_payload_reads_are_capped(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = await Producer(pool).enqueue(Task("blob", b"0123456789"))
    client = Client(pool)
    summary = await client.get_task_summary(task_id)
    assert (summary.id, summary.type, summary.payload_size, summary.status) == (
        task_id,
        "blob",
        10,
        TaskStatus.PENDING,
    )
    assert await client.get_payload(task_id) == b"0123456789"
    assert await client.get_payload(task_id, max_bytes=10) == b"0123456789"
    with pytest.raises(PayloadTooLarge) as info:
        await client.get_payload(task_id, max_bytes=9)
    assert (info.value.task_id, info.value.size, info.value.max_bytes) == (task_id, 10, 9)
    assert "10 bytes" in str(info.value)
    for call in (client.get_task_summary, client.get_payload):
        with pytest.raises(TaskNotFound):
            await call(424242)
    with pytest.raises(InvalidQuery, match="max_bytes"):
        await client.get_payload(task_id, max_bytes=-1)


async def test_bulk_retry_and_delete_failed_in_batches(pool: Pool, sync_conn: SyncConn) -> None:
    for task_type, n in (("a", 2100), ("b", 30)):
        sync_conn.execute(
            """INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
                   finalized_at)
               SELECT %s, '', 'failed', asynqpg_now(), 0, asynqpg_now()
               FROM generate_series(1, %s)""",
            (task_type, n),
        )
    keep = [make(sync_conn, s) for s in ("cancelled", "pending", "completed")]
    client = Client(pool)
    locked_id = sync_conn.execute("SELECT min(id) FROM asynqpg_tasks").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(sync_conn.info.dsn) as other:  # holds one failed row locked
        other.execute("SELECT 1 FROM asynqpg_tasks WHERE id = %s FOR UPDATE", (locked_id,))
        assert await client.retry_failed("b") == 30
        assert await client.retry_failed() == 2099  # the locked row is skipped
        assert await client.retry_failed() == 0
    assert status_of(sync_conn, locked_id) == "failed"
    counts = dict(
        sync_conn.execute("SELECT status, count(*) FROM asynqpg_tasks GROUP BY 1").fetchall()
    )
    assert counts == {"pending": 2130, "failed": 1, "cancelled": 1, "completed": 1}
    assert sync_conn.execute(
        "SELECT count(*) FROM asynqpg_tasks WHERE type <> 't' AND attempts_left = 1"
    ).fetchone() == (2129,)

    sync_conn.execute("UPDATE asynqpg_tasks SET status = 'failed' WHERE type <> 't'")
    async with pool.connection() as conn, conn.transaction():
        assert await client.delete_failed("b", conn=conn) == 30
        assert await client.delete_failed(conn=conn) == 2100
    assert [status_of(sync_conn, k) for k in keep] == ["cancelled", "pending", "completed"]
    assert sync_conn.execute("SELECT count(*) FROM asynqpg_tasks").fetchone() == (3,)
    with pytest.raises(InvalidQuery):
        await client.delete_failed(5)  # type: ignore[arg-type]


async def test_stats(pool: Pool, sync_conn: SyncConn) -> None:
    client = Client(pool)
    empty = await client.stats()
    assert (empty.total, dict(empty.by_status), empty.by_type) == (
        0,
        dict.fromkeys(TaskStatus, 0),
        (),
    )
    make(sync_conn, "pending", type="z", blocked_till="asynqpg_now() - '60s'::interval")
    make(sync_conn, "pending", type="z", blocked_till="asynqpg_now() - '10s'::interval")
    make(sync_conn, "failed", type="z")
    make(sync_conn, "pending", type="a", blocked_till="asynqpg_now() + '1h'::interval")
    make(sync_conn, "running", type="a")
    stats = await client.stats()
    assert stats.total == 5
    assert stats.by_status == {
        "pending": 3,
        "running": 1,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert [t.type for t in stats.by_type] == ["a", "z"]
    a, z = stats.by_type
    assert (a.total, a.by_status["running"], a.by_status["completed"]) == (2, 1, 0)
    assert a.oldest_pending_age is None  # scheduled for later: not lagging
    assert z.by_status == {"pending": 2, "running": 0, "completed": 0, "failed": 1, "cancelled": 0}
    assert z.oldest_pending_age is not None
    assert 60 <= z.oldest_pending_age < 70


async def test_client_owns_a_pool_only_for_a_dsn(dsn: str, pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn)
    async with Client(dsn) as client:
        assert (await client.get_task(task_id)).id == task_id
    async with Client(pool) as client:
        pass
    assert not pool.closed
    with pytest.raises(TypeError):
        Client(42)  # type: ignore[arg-type]
