"""Results, waiting and progress against real PostgreSQL: results round-trip (bytes, JSON),
the result limit, get_result on an unfinished task, 1,000 waiters on one LISTEN connection,
a cancelled waiter cancelling its running task, throttled progress writes."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
import trio
from rich.console import Console

from asynqpg_trio import (
    Client,
    Handler,
    Pool,
    Producer,
    ResultTooLarge,
    Task,
    TaskCancelled,
    TaskFailed,
    TaskInfo,
    TaskNotFinished,
    TaskNotFound,
    open_consumer,
    report_progress,
)
from asynqpg_trio._cli._render import task_table

from .helpers.waiting import wait_until
from .helpers.web import dashboard_client

FAST: dict[str, Any] = {"poll_interval": 0.1, "maintenance": False, "batch_interval": 0.005}


def row(sync_conn: psycopg.Connection[Any], task_id: int) -> tuple[Any, ...]:
    found = sync_conn.execute(
        "SELECT status, result, result_codec, progress, progress_note, messages"
        " FROM asynqpg_tasks WHERE id = %s",
        (task_id,),
    ).fetchone()
    assert found is not None
    return tuple(found)


async def test_results_round_trip_bytes_and_json(pool: Pool, sync_conn: Any) -> None:
    async def handle(task: TaskInfo) -> Any:
        if task.payload == b"bytes":
            return b"\x00\xffraw"
        if task.payload == b"none":
            return None
        return {"payload": task.payload.decode(), "items": [1, 2.5, "x", None, True]}

    producer, client = Producer(pool), Client(pool)
    ids = await producer.enqueue_many([Task("t", b"bytes"), Task("t", b"json"), Task("t", b"none")])
    async with open_consumer(pool, handlers={"t": handle}, **FAST):
        with trio.fail_after(10):
            results = [await client.wait(i) for i in ids if i is not None]
    assert results == [
        b"\x00\xffraw",
        {"payload": "json", "items": [1, 2.5, "x", None, True]},
        None,
    ]
    assert [await client.get_result(i) for i in ids if i is not None] == results
    assert ids[0] is not None and ids[2] is not None
    assert row(sync_conn, ids[0])[1:3] == (b"\x00\xffraw", "bytes")
    assert row(sync_conn, ids[2])[1:3] == (None, None)  # None stores nothing


async def test_a_too_large_or_unserialisable_result_fails_the_attempt(
    pool: Pool, sync_conn: Any
) -> None:
    async def handle(task: TaskInfo) -> Any:
        return b"x" * 101 if task.payload == b"big" else {1, 2}

    producer, client = Producer(pool), Client(pool)
    big = await producer.enqueue(Task("t", b"big", max_retry=1))
    odd = await producer.enqueue(Task("t", b"set", max_retry=1))
    async with open_consumer(pool, handlers={"t": Handler(handle, result_limit=100)}, **FAST):
        with trio.fail_after(10), pytest.raises(TaskFailed) as failed:
            await client.wait(big)
        with trio.fail_after(10), pytest.raises(TaskFailed) as odd_failed:
            await client.wait(odd)
    assert failed.value.task_id == big
    assert "ResultTooLarge" in str(failed.value)
    assert "101 bytes, more than its result_limit of 100" in str(failed.value)
    assert "return a reference" in str(failed.value)
    assert "ResultNotSerializable" in str(odd_failed.value)
    assert "JSON-serialisable" in str(odd_failed.value)
    assert row(sync_conn, big)[0] == "failed" and row(sync_conn, big)[1] is None
    with pytest.raises(TaskFailed):
        await client.get_result(big)
    assert issubclass(ResultTooLarge, Exception)


async def test_get_result_of_an_unfinished_or_missing_task(pool: Pool) -> None:
    client = Client(pool)
    task_id = await Producer(pool).enqueue(Task("t", b""))
    with pytest.raises(TaskNotFinished) as unfinished:
        await client.get_result(task_id)
    assert unfinished.value.status == "pending"
    assert f"task {task_id} is pending, not completed" in str(unfinished.value)
    assert "Client.wait" in str(unfinished.value)
    with pytest.raises(TaskNotFound):
        await client.get_result(task_id + 1000)
    await client.cancel_task(task_id)
    with pytest.raises(TaskCancelled):
        await client.get_result(task_id)
    with pytest.raises(TaskCancelled):
        await client.wait(task_id)


async def test_a_thousand_waiters_share_one_listen_connection(pool: Pool, sync_conn: Any) -> None:
    producer, client = Producer(pool), Client(pool)
    n = 1000
    ids = await producer.enqueue_many([Task("t", str(i).encode()) for i in range(n)])
    release = trio.Event()
    results: dict[int, Any] = {}
    woken_at: list[float] = []

    returned_at: list[float] = []

    async def handle(task: TaskInfo) -> Any:
        await release.wait()
        returned_at.append(time.perf_counter())
        return int(task.payload)

    async def waiter(task_id: int) -> None:
        results[task_id] = await client.wait(task_id)
        woken_at.append(time.perf_counter())

    handlers = {"t": Handler(handle, workers=n)}
    async with (
        open_consumer(pool, handlers=handlers, prefetch=0, **FAST),
        trio.open_nursery() as nursery,
    ):
        for task_id in ids:
            assert task_id is not None
            nursery.start_soon(waiter, task_id)
        await wait_until(lambda: client.waiter_statistics()[0] == n, what="registered")

        def watched() -> bool:  # every waiter has marked its task waited for
            marked = sync_conn.execute(
                "SELECT count(*) FROM asynqpg_tasks WHERE notify_done"
            ).fetchone()
            return bool(marked[0] == n)

        await wait_until(watched, timeout=30, what="every task marked")
        sync_conn.execute("SELECT pg_stat_clear_snapshot()")
        listening = sync_conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE '%%LISTEN asynqpg_done'"
        ).fetchone()[0]
        assert listening == 1
        started = time.perf_counter()
        release.set()
    assert sorted(results.values()) == list(range(n))
    waiting, opened, notes = client.waiter_statistics()
    assert waiting == 0 and opened == 1 and notes >= 1
    print(
        f"1,000 waiters: last woken {1000 * (max(woken_at) - started):.1f} ms after release,"
        f" {1000 * (max(woken_at) - max(returned_at)):.1f} ms after the last handler returned;"
        f" {notes} notifications"
    )


async def test_cancelling_a_waiter_cancels_its_running_task(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    running, cancelled = trio.Event(), trio.Event()
    cancelled_at: list[float] = []
    gave_up: list[float] = []

    async def handle(task: TaskInfo) -> None:
        running.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(time.perf_counter())
            cancelled.set()

    async with open_consumer(pool, handlers={"t": handle}, **FAST):
        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:

                async def wait_then_give_up() -> None:
                    await running.wait()
                    await trio.sleep(0.05)
                    gave_up.append(time.perf_counter())
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait_then_give_up)
                await producer.enqueue_and_wait(Task("t", b""), cancel_on_cancel=True)
        assert not scope.cancelled_caught
        with trio.fail_after(5):
            await cancelled.wait()
    elapsed_ms = 1000 * (cancelled_at[0] - gave_up[0])
    print(f"waiter cancel -> handler cancelled in {elapsed_ms:.1f} ms")
    assert elapsed_ms < 1000  # generous; measured a few ms
    (task_id,) = [r[0] for r in sync_conn.execute("SELECT id FROM asynqpg_tasks").fetchall()]
    assert row(sync_conn, task_id)[0] == "cancelled"


async def test_progress_is_throttled_and_the_last_value_kept(pool: Pool, sync_conn: Any) -> None:
    producer, client = Producer(pool), Client(pool)
    task_id = await producer.enqueue(Task("t", b""))
    seen: list[tuple[Any, ...]] = []

    async def handle(task: TaskInfo) -> str:
        for i in range(1, 101):  # 100 reports over about 0.5 s
            assert report_progress(i / 200, f"step {i}")
            await trio.sleep(0.005)
        record = await client.get_task(task.id)
        seen.append((record.progress, record.progress_note))
        assert report_progress(0.75, "last")  # never written by the writer: the completion
        return "done"

    async with open_consumer(pool, handlers={"t": handle}, **FAST) as consumer:
        with trio.fail_after(10):
            assert await client.wait(task_id) == "done"
        progress = consumer._parts.progress  # pyright: ignore[reportPrivateUsage]
        assert progress is not None
        writes = progress.writes
    # At most one write per 0.25 s: over ~0.5 s, about 3 writes, never 100.
    assert 1 <= writes <= 6, writes
    assert seen[0][0] is not None and 0 < seen[0][0] <= 0.5
    assert row(sync_conn, task_id)[3:5] == (0.75, "last")
    record = await client.get_task(task_id)
    assert (record.progress, record.progress_note) == (0.75, "last")
    assert record.progress_at is not None and record.result_size == len(b'"done"')
    assert not report_progress(0.5)  # outside a handler: nothing to do


async def test_progress_shows_in_tasks_show_and_on_the_task_page(
    pool: Pool, sync_conn: Any
) -> None:
    task_id = await Producer(pool).enqueue(Task("t", b""))
    sync_conn.execute(
        "UPDATE asynqpg_tasks SET status = 'completed', finalized_at = now(), progress = 0.5,"
        " progress_note = 'half <way>', progress_at = now(), result = '\"ok\"',"
        " result_codec = 'json' WHERE id = %s",
        (task_id,),
    )
    record = await Client(pool).get_task(task_id)
    console = Console(width=200, record=True)
    console.print(task_table(record))
    text = console.export_text()
    assert "[##########..........] 50%  half <way>" in text
    assert "4 bytes (read it with Client.get_result)" in text
    async with dashboard_client(pool) as http:
        page = await http.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    assert '<progress class="progress" max="1" value="0.5"' in page.text
    assert "half &lt;way&gt;" in page.text
    assert "<td>4 bytes</td>" in page.text


async def test_only_tasks_someone_waits_for_send_a_notify(pool: Pool, dsn: str) -> None:
    producer, client = Producer(pool), Client(pool)
    gate = trio.Event()

    async def handle(task: TaskInfo) -> int:
        if task.payload == b"abc":
            await gate.wait()
        return len(task.payload)

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN asynqpg_done")
        async with open_consumer(pool, handlers={"t": handle}, **FAST) as consumer:
            unwatched = await producer.enqueue_many([Task("t", b"x" * i) for i in range(50)])
            await wait_until(lambda: consumer.statistics().completed == 50, what="completed")
            assert list(listener.notifies(timeout=0.2)) == []  # nobody waits: no NOTIFY
            watched = await producer.enqueue(Task("t", b"abc"))
            got: list[Any] = []

            def marked() -> bool:
                found = listener.execute(
                    "SELECT notify_done FROM asynqpg_tasks WHERE id = %s", (watched,)
                ).fetchone()
                return found is not None and found[0] is True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _collect(client, watched, got))
                await wait_until(marked, what="the task marked as waited for")
                gate.set()
            assert got == [3]
            heard = [n.payload for n in listener.notifies(timeout=0.5)]
        assert heard == [str(watched)]
        assert [await client.get_result(i) for i in unwatched if i is not None] == list(range(50))


async def _collect(client: Client, task_id: int, into: list[Any]) -> None:
    with trio.fail_after(10):
        into.append(await client.wait(task_id))


async def test_a_cancelled_leader_hands_over_to_the_other_waiters(pool: Pool) -> None:
    producer, client = Producer(pool), Client(pool)
    gate = trio.Event()

    async def handle(task: TaskInfo) -> str:
        await gate.wait()
        return task.payload.decode()

    first = await producer.enqueue(Task("t", b"first"))
    second = await producer.enqueue(Task("t", b"second"))
    got: list[Any] = []
    async with open_consumer(pool, handlers={"t": handle}, **FAST):
        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()

            async def lead() -> None:
                with leader_scope:
                    await client.wait(first)  # the first waiter leads

            nursery.start_soon(lead)
            await wait_until(lambda: client.waiter_statistics()[1] == 1, what="listening")
            nursery.start_soon(_collect, client, second, got)
            await wait_until(lambda: client.waiter_statistics()[0] == 2, what="two waiters")
            leader_scope.cancel()  # the leader leaves; the other waiter takes over
            await wait_until(lambda: client.waiter_statistics()[0] == 1, what="one waiter")
            gate.set()
        assert got == ["second"]
        assert await client.wait(first) == "first"
    assert client.waiter_statistics()[0] == 0
