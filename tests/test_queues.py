"""Named queues, priorities, pause and resume, per-queue caps and cluster-wide limits, driven
through the public API against real PostgreSQL (several consumer processes for the limits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from asynqpg_trio import (
    Client,
    ConfigurationError,
    Handler,
    InvalidTask,
    Pool,
    Producer,
    Task,
    TaskInfo,
    open_consumer,
)

from .helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}


def statuses(sync_conn: psycopg.Connection[Any], ids: list[int]) -> list[str]:
    rows = dict(
        sync_conn.execute(
            "SELECT id, status FROM asynqpg_tasks WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    return [rows[i] for i in ids]


async def test_a_go_producer_row_lands_in_the_default_queue_and_runs(
    pool: Pool, sync_conn: Any
) -> None:
    # The Go library's insert names neither queue nor priority.
    (task_id,) = sync_conn.execute(
        "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
        " VALUES ('go', 'x', now(), 3) RETURNING id"
    ).fetchone()
    assert sync_conn.execute(
        "SELECT queue, priority FROM asynqpg_tasks WHERE id = %s", (task_id,)
    ).fetchone() == ("default", 0)
    seen: list[TaskInfo] = []

    async def handle(task: TaskInfo) -> None:
        seen.append(task)

    async with open_consumer(pool, handlers={"go": handle}, **FAST):
        await wait_until(lambda: seen, what="the Go row to be handled")
    assert (seen[0].id, seen[0].queue, seen[0].priority) == (task_id, "default", 0)
    assert statuses(sync_conn, [task_id]) == ["completed"]


async def test_a_consumer_claims_only_the_queues_it_serves(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    default, mail, bulk = [
        await producer.enqueue(task)
        for task in (Task("t", b"d"), Task("t", b"m", queue="mail"), Task("t", b"b", queue="bulk"))
    ]
    seen: list[tuple[int, str]] = []

    async def handle(task: TaskInfo) -> None:
        seen.append((task.id, task.queue))

    async with open_consumer(pool, handlers={"t": handle}, queues=["mail"], **FAST):
        await wait_until(lambda: seen, what="the mail task")
        await trio.sleep(0.5)  # several polls: the others stay untouched
    assert seen == [(mail, "mail")]
    assert statuses(sync_conn, [default, mail, bulk]) == ["pending", "completed", "pending"]


async def test_priorities_run_most_urgent_first_then_oldest(pool: Pool) -> None:
    producer = Producer(pool)
    tasks = [
        Task("t", b"low-1", priority=-5),
        Task("t", b"mid-1"),
        Task("t", b"high-1", priority=5),
        Task("t", b"mid-2"),
        Task("t", b"high-2", priority=5),
        Task("t", b"low-2", priority=-5),
    ]
    await producer.enqueue_many(tasks)
    order: list[bytes] = []

    async def handle(task: TaskInfo) -> None:
        order.append(task.payload)

    # One worker and no prefetch: the claims take one task at a time, in claim order.
    handler = Handler(handle, workers=1)
    async with open_consumer(pool, handlers={"t": handler}, prefetch=0, **FAST):
        await wait_until(lambda: len(order) == len(tasks), what="every task")
    assert order == [b"high-1", b"high-2", b"mid-1", b"mid-2", b"low-1", b"low-2"]


async def test_bad_queue_and_priority_are_refused(pool: Pool) -> None:
    producer = Producer(pool)
    with pytest.raises(InvalidTask, match="priority must be between -5"):
        await producer.enqueue(Task("t", b"", priority=6))
    with pytest.raises(InvalidTask, match="priority must be an int"):
        await producer.enqueue(Task("t", b"", priority=True))
    with pytest.raises(InvalidTask, match="queue must be 1 to 128"):
        await producer.enqueue(Task("t", b"", queue=""))
    with pytest.raises(InvalidTask) as info:
        await producer.enqueue_many([Task("t", b""), Task("t", b"", queue="x" * 129)])
    assert info.value.index == 1
    with pytest.raises(ConfigurationError, match="queues must name at least one"):
        async with open_consumer(pool, handlers={"t": _noop}, queues=[]):
            pass
    with pytest.raises(ConfigurationError, match=r"write \['mail'\]"):
        async with open_consumer(pool, handlers={"t": _noop}, queues="mail"):
            pass


async def _noop(task: TaskInfo) -> None:
    return None


async def test_pause_stops_claims_and_resume_restarts_them_at_once(
    pool: Pool, sync_conn: Any
) -> None:
    client, producer = Client(pool), Producer(pool)
    assert await client.pause_queue("mail") is True
    assert await client.pause_queue("mail") is False  # paused already
    seen: list[int] = []

    async def handle(task: TaskInfo) -> None:
        seen.append(task.id)

    # A long poll interval: only the resume's NOTIFY can wake the idle consumer quickly.
    async with open_consumer(
        pool,
        handlers={"t": handle},
        queues=["mail", "default"],
        poll_interval=30.0,
        maintenance=False,
    ):
        held = await producer.enqueue(Task("t", b"", queue="mail"))
        free = await producer.enqueue(Task("t", b""))
        await wait_until(lambda: free in seen, what="the default queue's task")
        assert held not in seen
        (info,) = [q for q in await client.queues() if q.name == "mail"]
        assert info.paused and info.counts == {"pending": 1}
        assert await client.resume_queue("mail") is True
        await wait_until(lambda: held in seen, timeout=5.0, what="the resumed queue's task")
    assert await client.resume_queue("mail") is False
    assert [q.paused for q in await client.queues() if q.name == "mail"] == [False]


async def test_a_queue_cap_bounds_what_one_consumer_holds(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    await producer.enqueue_many([Task("t", b"", queue="narrow") for _ in range(12)])
    await producer.enqueue_many([Task("t", b"", queue="wide") for _ in range(12)])
    running: dict[str, int] = {"narrow": 0, "wide": 0}
    peak: dict[str, int] = {"narrow": 0, "wide": 0}
    done: list[int] = []

    async def handle(task: TaskInfo) -> None:
        running[task.queue] += 1
        peak[task.queue] = max(peak[task.queue], running[task.queue])
        await trio.sleep(0.05)
        running[task.queue] -= 1
        done.append(task.id)

    async with open_consumer(
        pool,
        handlers={"t": Handler(handle, workers=10)},
        queues={"narrow": 2, "wide": None},
        **FAST,
    ):
        await wait_until(lambda: len(done) == 24, what="every task")
    assert peak["narrow"] <= 2  # the cap
    assert peak["wide"] > 2  # the other queue is not held back by it


async def test_limit_settings_are_checked(pool: Pool) -> None:
    client = Client(pool)
    with pytest.raises(ConfigurationError, match="exactly one of queue= and type="):
        await client.set_limit(max_running=1)
    with pytest.raises(ConfigurationError, match="exactly one of queue= and type="):
        await client.set_limit(queue="q", type="t", max_running=1)
    with pytest.raises(ConfigurationError, match="needs max_running=, rate=, or both"):
        await client.set_limit(queue="q")
    with pytest.raises(ConfigurationError, match="burst= needs rate="):
        await client.set_limit(queue="q", max_running=1, burst=3)
    with pytest.raises(ConfigurationError, match="rate"):
        await client.set_limit(type="t", rate=0)
    await client.set_limit(type="t", max_running=3, rate=10, per=60)
    (limit,) = await client.limits()
    assert (limit.scope, limit.name, limit.max_running, limit.rate, limit.per, limit.burst) == (
        "type",
        "t",
        3,
        10,
        60.0,
        10,
    )
    assert await client.clear_limit(type="t") is True
    assert await client.clear_limit(type="t") is False
    assert await client.limits() == ()


def _consumer_procs(dsn: str, out: Path, n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.consumer_proc",
                dsn,
                "slow",
                str(out),
                str(seconds),
            ],
            cwd=ROOT,
        )
        for _ in range(n)
    ]


async def test_max_running_holds_across_four_consumer_processes(
    dsn: str, pool: Pool, sync_conn: Any, tmp_path: Path
) -> None:
    client = Client(pool)
    await client.set_limit(type="work", max_running=10)
    ids = [i for i in await Producer(pool).enqueue_many([Task("work", b"")] * 300) if i]
    out = tmp_path / "handled.txt"
    procs = _consumer_procs(dsn, out, 4, 60)
    samples: list[int] = []
    try:
        while True:
            (running,) = sync_conn.execute(
                "SELECT count(*) FROM asynqpg_tasks WHERE type = 'work' AND status = 'running'"
            ).fetchone()
            samples.append(running)
            (left,) = sync_conn.execute(
                "SELECT count(*) FROM asynqpg_tasks WHERE type = 'work'"
                " AND status IN ('pending', 'running')"
            ).fetchone()
            if left == 0 or all(p.poll() is not None for p in procs):
                break
            await trio.sleep(0.005)
    finally:
        for p in procs:
            p.wait(timeout=60)
    handled = [int(line) for line in out.read_text().split()]
    assert sorted(handled) == sorted(ids)  # every task once, none twice
    assert max(samples) <= 10  # never more running at once, whatever the process
    assert max(samples) >= 5  # and the limit was actually reached for (not a starved run)
    assert len(samples) > 50


async def test_rate_limit_bounds_the_starts_in_every_window(
    dsn: str, pool: Pool, sync_conn: Any, tmp_path: Path
) -> None:
    rate, burst, per = 20, 5, 1.0
    client = Client(pool)
    await client.set_limit(queue="default", rate=rate, per=per, burst=burst)
    ids = [i for i in await Producer(pool).enqueue_many([Task("work", b"")] * 60) if i]
    out = tmp_path / "handled.txt"
    procs = _consumer_procs(dsn, out, 2, 60)
    for p in procs:
        p.wait(timeout=90)
    assert sorted(int(line) for line in out.read_text().split()) == sorted(ids)
    # Start times on the database's clock (each task is claimed once: attempted_at).
    starts = [
        row[0]
        for row in sync_conn.execute(
            "SELECT extract(epoch FROM attempted_at)::float8 FROM asynqpg_tasks"
            " WHERE type = 'work' ORDER BY attempted_at"
        ).fetchall()
    ]
    assert len(starts) == 60
    window = 1.0
    most = max(sum(1 for t in starts[i:] if t < start + window) for i, start in enumerate(starts))
    assert most <= burst + rate * window / per  # the token bucket's bound
    # The bucket does let tasks start at its rate: the 60 starts span at least
    # (60 - burst) / rate seconds of database time.
    assert starts[-1] - starts[0] >= (60 - burst) / rate * per - 0.05


async def test_migrate_upgrades_a_version_1_database_with_rows(empty_dsn: str) -> None:
    from asynqpg_trio import SchemaMissing, migrate
    from asynqpg_trio._pg._migrate import MIGRATIONS

    first = MIGRATIONS[0]
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(first.sql.encode())
        conn.execute(
            "CREATE TABLE asynqpg_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO asynqpg_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (first.version, first.name, first.checksum),
        )
        conn.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
            " SELECT 'old', '', now(), 3 FROM generate_series(1, 1000)"
        )
    with pytest.raises(SchemaMissing, match="migrate"):  # a consumer refuses the old schema
        async with open_consumer(empty_dsn, handlers={"old": _noop}, **FAST):
            pass
    assert await migrate(empty_dsn) == [m.version for m in MIGRATIONS[1:]]
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT queue, priority, count(*) FROM asynqpg_tasks GROUP BY 1, 2"
        ).fetchall() == [("default", 0, 1000)]
    done: list[int] = []

    async def handle(task: TaskInfo) -> None:
        done.append(task.id)

    async with open_consumer(empty_dsn, handlers={"old": handle}, **FAST):
        await wait_until(lambda: len(done) == 1000, what="every old row")


async def test_an_urgent_task_overtakes_what_a_busy_consumer_holds(pool: Pool) -> None:
    # Two slow workers and a prefetch buffer of 20: the consumer holds 22 tasks of priority 0
    # when a priority-5 task is enqueued.  Its NOTIFY says priority 5: the next claim takes it
    # as soon as there is room (one handler finishing), and it starts ahead of everything the
    # buffer held, rather than about 20 starts later.
    producer = Producer(pool)
    await producer.enqueue_many([Task("t", b"backlog") for _ in range(60)])
    started: list[bytes] = []

    async def handle(task: TaskInfo) -> None:
        started.append(task.payload)
        await trio.sleep(0.05)

    handler = Handler(handle, workers=2)
    async with open_consumer(pool, handlers={"t": handler}, prefetch=20, **FAST) as consumer:
        await wait_until(lambda: len(started) >= 4, what="the backlog running")
        await wait_until(lambda: consumer.statistics().claimed >= 22, what="the buffer filled")
        await producer.enqueue(Task("t", b"urgent", priority=5))
        enqueued_at = len(started)
        await wait_until(lambda: b"urgent" in started, what="the urgent task")
    overtaken = started.index(b"urgent") - enqueued_at
    assert overtaken <= 3, f"the urgent task started {overtaken} starts after its enqueue"
