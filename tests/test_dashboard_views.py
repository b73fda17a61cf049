"""Issue #22 and the schedules of #19: the consumer registry (two live consumers, what each
runs, deregistration, ageing out), the task timeline with times, handler-only tracebacks, the
Scheduled view and the Schedules page, on real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import trio

from asynqpg_trio import (
    ConstantRetryPolicy,
    Handler,
    Pool,
    Producer,
    Task,
    TaskInfo,
    open_consumer,
)
from asynqpg_trio._api._client import Client
from asynqpg_trio._core._history import headline, timeline
from asynqpg_trio._core._outcome import format_error
from asynqpg_trio._pg._consumers_repo import list_consumers, message_stamps

from .helpers.waiting import wait_until
from .helpers.web import SyncConn, dashboard_client

FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}


async def _consumers(pool: Pool) -> list[Any]:
    async with pool.connection() as conn:
        return await list_consumers(conn)


async def test_two_live_consumers_are_listed_with_what_they_run(pool: Pool) -> None:
    release = trio.Event()
    started: list[int] = []

    async def block(task: TaskInfo) -> None:
        started.append(task.id)
        await release.wait()

    producer = Producer(pool)
    ids = [await producer.enqueue(Task("slow", b"{}")) for _ in range(2)]
    seen: list[Any] = []
    handlers = {"slow": Handler(block, workers=1)}
    async with (
        open_consumer(pool, handlers=handlers, consumer_id="c-one", prefetch=0, **FAST),
        open_consumer(pool, handlers=handlers, consumer_id="c-two", prefetch=0, **FAST),
    ):
        await wait_until(lambda: len(started) == 2, what="both tasks to start")
        # Both lease keepers have registered: a row in the database, which has no event.
        with trio.fail_after(10):
            while len(seen := await _consumers(pool)) < 2:  # noqa: ASYNC110
                await trio.sleep(0.02)
        async with dashboard_client(pool) as http:
            api = (await http.get("/api/consumers")).json()["data"]
            page = await http.get("/consumers")
        release.set()
    by_id = {c.id: c for c in seen}
    assert set(by_id) == {"c-one", "c-two"}
    running = sorted(t.id for c in seen for t in c.running)
    assert running == sorted(ids)
    # Each consumer (one worker) runs one of them.
    for c in seen:
        assert [(t.owner, t.type) for t in c.running] == [(c.id, "slow")]
        assert c.handlers == {"slow": 1} and c.queues == {"default": None}
        assert c.pid > 0 and c.host and c.heartbeat_every == 10.0
    assert {c["id"] for c in api} == {"c-one", "c-two"}
    assert sorted(t["id"] for c in api for t in c["running"]) == sorted(ids)
    assert page.status_code == 200
    assert 'data-consumer="c-one"' in page.text and 'data-consumer="c-two"' in page.text
    for task_id in ids:
        assert f'data-task-id="{task_id}"' in page.text
    # A graceful shutdown deregisters.
    assert await _consumers(pool) == []


async def test_dead_consumers_age_out(pool: Pool, sync_conn: SyncConn) -> None:
    sync_conn.execute(
        """INSERT INTO asynqpg_consumers (id, host, pid, version, queues, handlers,
               heartbeat_every, started_at, heartbeat_at)
           VALUES ('dead', 'h', 1, '0', '{}', '{}', 1.0, asynqpg_now() - interval '1 h',
                   asynqpg_now() - interval '10 s'),
                  ('alive', 'h', 2, '0', '{"default": null}', '{"t": 3}', 10.0, asynqpg_now(),
                   asynqpg_now() - interval '10 s')"""
    )
    assert [c.id for c in await _consumers(pool)] == ["alive"]

    # A registration deletes the dead rows.
    def ids() -> set[str]:
        return {str(r[0]) for r in sync_conn.execute("SELECT id FROM asynqpg_consumers")}

    async with open_consumer(pool, handlers={"t": lambda t: None}, consumer_id="new", **FAST):
        await wait_until(lambda: ids() == {"alive", "new"}, what="the registration")
    assert ids() == {"alive"}


async def test_timeline_has_every_attempt_in_order_with_times(pool: Pool) -> None:
    calls: list[int] = []

    async def flaky(task: TaskInfo) -> None:
        calls.append(task.attempts_elapsed)
        if len(calls) < 3:
            raise ValueError(f"boom {len(calls)}")

    task_id = await Producer(pool).enqueue(Task("flaky", b"", max_retry=5))
    async with open_consumer(
        pool, handlers={"flaky": flaky}, retry_policy=ConstantRetryPolicy(0), **FAST
    ):
        await wait_until(lambda: len(calls) == 3)
        client = Client(pool)
        for _ in range(200):
            task = await client.get_task_summary(task_id)
            if task.status.value == "completed":
                break
            await trio.sleep(0.02)
    assert task.status.value == "completed"
    async with pool.connection() as conn:
        stamps = await message_stamps(conn, task_id)
    assert stamps is not None
    times, starts = stamps
    assert len(times) == len(starts) == 2 and None not in times and None not in starts
    events = timeline(task, times, starts)
    labels = [e.label for e in events]
    assert labels == [
        "Enqueued",
        "Attempt 1 started",
        "Error",
        "Attempt 2 started",
        "Error",
        "Attempt 3 started",
        "Completed",
    ]
    moments = [e.at for e in events]
    assert None not in moments and moments == sorted(moments)  # type: ignore[type-var]
    assert headline(events[2].text) == "ValueError: boom 1"
    # The stored traceback holds the handler's frames, none of this package's.
    assert "in flaky" in task.messages[0] and "asynqpg_trio" not in task.messages[0]
    async with dashboard_client(pool) as http:
        page = await http.get(f"/tasks/{task_id}")
        listed = await http.get("/tasks")
    assert page.text.index("Attempt 1 started") < page.text.index("Attempt 3 started")
    assert page.text.count('data-kind="error"') == 2
    # The list shows the headline only, never the traceback.
    assert ">ValueError: boom 2</span>" in listed.text  # the last message's first line
    assert "Traceback" not in listed.text and "in flaky" not in listed.text


def test_format_error_keeps_only_the_handlers_frames() -> None:
    def handler() -> None:
        raise KeyError("missing")

    def library_like() -> None:
        handler()

    try:
        library_like()
    except KeyError as exc:
        text = format_error(exc, 2048)
    assert text.splitlines()[0] == "KeyError: 'missing'"
    assert "in handler" in text and "in library_like" in text
    assert "_handlers.py" not in text and "asynqpg_trio" not in text


async def test_scheduled_view_and_schedules_page(pool: Pool, sync_conn: SyncConn) -> None:
    producer = Producer(pool)
    later = await producer.enqueue(Task("t", b"", delay=3600))
    sooner = await producer.enqueue(Task("t", b"", delay=60))
    now = await producer.enqueue(Task("t", b""))
    sync_conn.execute(
        """INSERT INTO asynqpg_schedules (name, type, spec, timezone, catch_up, last_fire,
               next_fire)
           VALUES ('nightly', 'report', '0 3 * * *', 'Europe/Paris', 'latest',
                   asynqpg_now() - interval '1 h', asynqpg_now() + interval '23 h')"""
    )
    async with dashboard_client(pool) as http:
        api = (await http.get("/api/tasks?scheduled=true&order_by=blocked_till")).json()["data"]
        page = await http.get("/scheduled")
        bad = await http.get("/tasks?status=nope")
        schedules = (await http.get("/api/schedules")).json()["data"]
        schedules_page = await http.get("/schedules")
    assert [t["id"] for t in api["tasks"]] == [sooner, later]
    assert page.status_code == 200
    assert page.text.index(f'data-task-id="{sooner}"') < page.text.index(f'data-task-id="{later}"')
    assert f'data-task-id="{now}"' not in page.text
    assert bad.status_code == 400
    assert schedules[0]["name"] == "nightly" and schedules[0]["catch_up"] == "latest"
    assert schedules[0]["spec"] == "0 3 * * *" and schedules[0]["timezone"] == "Europe/Paris"
    assert 'data-schedule="nightly"' in schedules_page.text
    assert json.loads(json.dumps(schedules))  # JSON-ready


def test_consumers_command_lists_a_registered_consumer(dsn: str, sync_conn: SyncConn) -> None:
    import subprocess
    import sys

    sync_conn.execute(
        """INSERT INTO asynqpg_consumers (id, host, pid, version, queues, handlers,
               heartbeat_every, in_flight, started_at, heartbeat_at)
           VALUES ('cli-one', 'box', 42, '9.9', '{"mail": 4}', '{"email": 3}', 10.0, 1,
                   asynqpg_now(), asynqpg_now())"""
    )
    command = [sys.executable, "-m", "asynqpg_trio._cli", "consumers", "--dsn", dsn]
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True)
    table = subprocess.run(command, capture_output=True, text=True, check=True)
    (only,) = json.loads(as_json.stdout)["consumers"]
    assert (only["id"], only["host"], only["pid"], only["queues"]) == (
        "cli-one",
        "box",
        42,
        {"mail": 4},
    )
    assert only["handlers"] == {"email": 3} and only["running"] == []
    assert "cli-one" in table.stdout and "mail (cap 4)" in table.stdout


def test_stamps_stay_aligned_with_messages(sync_conn: SyncConn) -> None:
    def stamp(times: str, kept: int) -> list[Any]:
        query = f"SELECT asynqpg_stamp({times}, %s, '2026-01-01T00:00:00Z')"
        row = sync_conn.execute(query, (kept,)).fetchone()
        assert row is not None
        return [None if t is None else t.year for t in row[0]]

    # Messages a Go consumer (or an older version) wrote carry no stamp: NULLs in front.
    assert stamp("NULL", 0) == [2026]
    assert stamp("NULL", 2) == [None, None, 2026]
    assert stamp("ARRAY['2025-01-01'::timestamptz]", 3) == [None, None, 2025, 2026]
    # More stamps than messages (messages trimmed elsewhere): the newest are kept.
    assert stamp("ARRAY['2024-01-01'::timestamptz, '2025-01-01']", 1) == [2025, 2026]
    # The last 100, as the writes keep of messages.
    assert len(stamp("NULL", 150)) == 100
