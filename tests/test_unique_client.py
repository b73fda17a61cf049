"""An operator's moves of unique tasks: a manual retry or cancel never makes a second holder.

The consumer only moves a unique task between pending and running (both always among its
states) or out of its states, so only the client can move one *into* its states while another
task holds its key: `Client.retry_task` and `Client.cancel_task` then raise `DuplicateTask`
and leave the task as it was, and `Client.retry_failed` leaves such tasks failed.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from asynqpg_trio import Client, DuplicateTask, Pool, Producer, Task, Unique, connect
from asynqpg_trio._core._state import Event
from tests.helpers import state_db as db
from tests.helpers.web import csrf_token, dashboard_client, error_of
from tests.test_unique import settle

T = db.TYPE


def status(sync_conn: psycopg.Connection[Any], task_id: int) -> str:
    row = sync_conn.execute("SELECT status FROM asynqpg_tasks WHERE id = %s", (task_id,))
    found = row.fetchone()
    assert found is not None
    return str(found[0])


async def failed(pool: Pool, dsn: str, task: Task) -> int:
    """Enqueue ``task`` (of type `T`) and fail it as its handler would."""
    task_id = await Producer(pool).enqueue(task)
    conn = await connect(dsn)
    try:
        await settle(conn, task_id, Event.FAIL)
    finally:
        await conn.close()
    return task_id


async def test_retry_of_a_task_whose_key_is_held_is_refused(
    dsn: str, pool: Pool, sync_conn: Any
) -> None:
    client = Client(pool)
    old = await failed(pool, dsn, Task(T, b"", unique=Unique("k")))
    new = await Producer(pool).enqueue(Task(T, b"", unique=Unique("k")))  # failed: key free
    with pytest.raises(DuplicateTask) as caught:
        await client.retry_task(old)
    assert (caught.value.existing_id, caught.value.unique_key) == (new, "k")
    assert status(sync_conn, old) == "failed"
    # Inside the caller's transaction: refused, and the transaction is still usable.
    conn = await connect(dsn, autocommit=False)
    try:
        with pytest.raises(DuplicateTask):
            await client.retry_task(old, conn=conn)
        await conn.execute("SELECT 1")
        await conn.commit()
    finally:
        await conn.close()
    # Once the holder is gone, the retry goes through.
    await client.delete_task(new)
    assert (await client.retry_task(old)).status == "pending"


async def test_cancel_into_a_held_key_is_refused(dsn: str, pool: Pool, sync_conn: Any) -> None:
    client = Client(pool)
    keep_cancelled = Unique("c", states=("pending", "running", "cancelled"))
    old = await failed(pool, dsn, Task(T, b"", unique=keep_cancelled))
    new = await Producer(pool).enqueue(Task(T, b"", unique=keep_cancelled))
    with pytest.raises(DuplicateTask) as caught:
        await client.cancel_task(old)
    assert caught.value.existing_id == new
    assert status(sync_conn, old) == "failed"
    assert (await client.cancel_task(new)).status == "cancelled"  # its own key: fine


async def test_retry_failed_leaves_tasks_whose_key_is_held(
    dsn: str, pool: Pool, sync_conn: Any
) -> None:
    producer = Producer(pool)
    older = await failed(pool, dsn, Task(T, b"1", unique=Unique("twins")))
    younger = await failed(pool, dsn, Task(T, b"2", unique=Unique("twins")))
    blocked = await failed(pool, dsn, Task(T, b"3", unique=Unique("held")))
    keep_failed = Unique("kf", states=("pending", "running", "failed"))
    holds_as_failed = await failed(pool, dsn, Task(T, b"5", unique=keep_failed))
    plain = await failed(pool, dsn, Task(T, b"6"))
    holder = await producer.enqueue(Task(T, b"4", unique=Unique("held")))  # after the claims
    assert await Client(pool).retry_failed() == 3
    assert {i: status(sync_conn, i) for i in (older, younger, blocked, holder)} == {
        older: "pending",  # the older of two failed twins goes first
        younger: "failed",
        blocked: "failed",
        holder: "pending",
    }
    assert status(sync_conn, holds_as_failed) == "pending"  # it held its key already
    assert status(sync_conn, plain) == "pending"
    assert await Client(pool).retry_failed() == 0  # the rest stay until their key is free


async def test_the_dashboard_answers_409(dsn: str, pool: Pool, sync_conn: Any) -> None:
    old = await failed(pool, dsn, Task(T, b"", unique=Unique("k")))
    await Producer(pool).enqueue(Task(T, b"", unique=Unique("k")))
    async with dashboard_client(pool) as http:
        token = await csrf_token(http)
        answer = await http.post(f"/api/tasks/{old}/retry", headers={"X-CSRF-Token": token})
    assert error_of(answer) == (409, "duplicate_task", "another task holds this task's unique key")
    assert status(sync_conn, old) == "failed"
