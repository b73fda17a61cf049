"""Through PgBouncer in transaction pooling mode: producers, consumers, the client and the
dashboard work, with LISTEN on a direct connection (``direct_dsn``) or poll-only.

PgBouncer is a real one, started by the fixture on a loopback port in front of the test server
(installed from the distribution's packages when missing and allowed; skipped with the reason
otherwise: ``tests/helpers/servers.py``).  Its pool has a handful of server connections, so
every statement a consumer runs shares server sessions with the others: a server-side prepared
statement, a session setting or a session lock would show up here as an error or a lost
wake-up.  The multi-process burn-down is the benchmark's (``benchmarks/scale_pgbouncer.py``)
at the issue's size: 16 processes, 50,000 tasks, 10 server connections (its rate against
direct connections is in the benchmarks README).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from asynqpg_trio import (
    Client,
    ConfigurationError,
    DuplicateTask,
    Handler,
    Producer,
    Task,
    TaskInfo,
    migrate,
    open_consumer,
    open_pool,
)
from benchmarks.scale_pgbouncer import burn_down

from .helpers.servers import Bouncer, pgbouncer
from .helpers.web import dashboard_client

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    """PgBouncer (pool_mode = transaction, 4 server connections) before the test server."""
    with pgbouncer(server_dsn, pool_size=4) as running:
        yield running


def _server_pids(dsn: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


async def _work_through(
    pool: Any, dsn: str, *, poll_interval: float, count: int = 60
) -> tuple[list[int], list[int]]:
    """Enqueue ``count`` tasks (a third with idempotency tokens, enqueued twice) through the
    pool and let one consumer on it run them; return (enqueued ids, ids handled)."""
    handled: list[int] = []
    done = trio.Event()

    async def record(task: TaskInfo) -> None:
        handled.append(task.id)
        if len(handled) >= count:
            done.set()

    producer = Producer(pool)
    async with open_consumer(
        pool,
        handlers={"t": Handler(record, workers=4)},
        poll_interval=poll_interval,
        maintenance=False,
    ):
        ids: list[int] = []
        for i in range(count):
            token = f"tok-{i}" if i % 3 == 0 else None
            task = Task("t", f"{i}".encode(), idempotency_token=token)
            ids.append(await producer.enqueue(task))
            if token is not None:  # the duplicate is refused, naming the first one's id
                with pytest.raises(DuplicateTask, match=f"id {ids[-1]}"):
                    await producer.enqueue(task)
        with trio.fail_after(60):
            await done.wait()
    return ids, handled


@pytest.mark.trio
async def test_producer_consumer_and_client_through_pgbouncer_listening_directly(
    bouncer: Bouncer, dsn: str
) -> None:
    through = bouncer.dsn_for(dsn)
    async with open_pool(through, max_size=6, transaction_pooling=True, direct_dsn=dsn) as pool:
        # A long poll interval: the tasks are claimed at once only if the NOTIFYs (sent
        # through PgBouncer) reach the LISTEN connection (direct).
        ids, handled = await _work_through(pool, dsn, poll_interval=30.0)
        client = Client(pool)
        for task_id in ids[:10]:  # more than psycopg's prepare threshold (5) on each statement
            info = await client.get_task(task_id)
            assert info.status == "completed"
        listed = await client.list_tasks(statuses=["completed"], limit=100)
        stats = await client.stats()
    assert sorted(handled) == sorted(ids)
    assert {t.id for t in listed.tasks} == set(ids)
    assert stats.by_status["completed"] == len(ids)


@pytest.mark.trio
async def test_poll_only_through_pgbouncer_with_no_direct_connection(
    bouncer: Bouncer, dsn: str
) -> None:
    through = bouncer.dsn_for(dsn)
    async with open_pool(through, max_size=6, transaction_pooling=True) as pool:
        assert not pool.has_session
        ids, handled = await _work_through(pool, dsn, poll_interval=0.1)
        # Poll-only: no connection of ours ever LISTENs (every backend is PgBouncer's).
        with psycopg.connect(dsn, autocommit=True) as conn:
            listening = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query ILIKE 'LISTEN%%'"
            ).fetchone()
        with pytest.raises(ConfigurationError, match="direct_dsn"):
            await migrate(pool)
    assert sorted(handled) == sorted(ids)
    assert listening == (0,)
    # PgBouncer kept to its pool: never more server sessions than pool_size.
    assert len(_server_pids(dsn)) <= bouncer.pool_size


@pytest.mark.trio
async def test_a_remote_cancel_reaches_a_poll_only_consumer(bouncer: Bouncer, dsn: str) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def wait_forever(task: TaskInfo) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with (
        open_pool(bouncer.dsn_for(dsn), max_size=6, transaction_pooling=True) as pool,
        open_consumer(
            pool,
            handlers={"t": Handler(wait_forever, workers=1)},
            poll_interval=0.1,
            cancel_check_interval=0.2,
            maintenance=False,
        ),
    ):
        task_id = await Producer(pool).enqueue(Task("t", b""))
        with trio.fail_after(30):
            await started.wait()
            await Client(pool).cancel_task(task_id)
            await cancelled.wait()
        task = await Client(pool).get_task(task_id)
    assert task.status == "cancelled"


@pytest.mark.trio
async def test_the_dashboard_through_pgbouncer(bouncer: Bouncer, dsn: str) -> None:
    async with open_pool(bouncer.dsn_for(dsn), max_size=4, transaction_pooling=True) as pool:
        producer = Producer(pool)
        ids = [await producer.enqueue(Task("t", b"x")) for _ in range(5)]
        async with dashboard_client(pool) as http:
            for _ in range(7):  # past psycopg's prepare threshold
                stats = await http.get("/api/stats")
                listed = await http.get("/api/tasks", params={"status": "pending"})
                one = await http.get(f"/api/tasks/{ids[0]}")
                for answer in (stats, listed, one):
                    assert answer.status_code == 200, answer.text
            page = await http.get("/")
    assert page.status_code == 200
    assert {t["id"] for t in listed.json()["data"]["tasks"]} == set(ids)


@pytest.mark.slow
def test_16_consumer_processes_burn_50_000_tasks_through_a_pool_of_10(
    server_dsn: str, dsn: str, tmp_path: Path
) -> None:
    """The issue's size: 16 processes, 50,000 tasks, PgBouncer with 10 server connections
    (LISTEN on direct connections); nothing lost, nothing run twice."""
    with pgbouncer(server_dsn, pool_size=10) as ten:
        result = burn_down(
            dsn, ten.dsn_for(dsn), tmp_path, mode="bouncer", processes=16, tasks=50_000
        )
    assert result.completed == result.tasks == 50_000
    assert result.handler_runs == result.distinct_ids == 50_000
    assert result.doubled == 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct-dsn", "poll-only"])
def test_the_worker_command_through_pgbouncer(bouncer: Bouncer, dsn: str, direct: bool) -> None:
    from asynqpg_trio import sync

    with psycopg.connect(dsn, autocommit=True) as conn:
        sync.enqueue_many(conn, [Task("greet", f"n{i}".encode()) for i in range(30)])
    extra = ["--direct-dsn", dsn] if direct else []
    command = [sys.executable, "-m", "asynqpg_trio._cli", "--dsn", bouncer.dsn_for(dsn)]
    proc = subprocess.Popen(
        [*command, "--transaction-pooling", *extra, "worker", "examples.worker_app:handlers"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                done = conn.execute(
                    "SELECT count(*) FROM asynqpg_tasks WHERE status = 'completed'"
                ).fetchone()
                if done == (30,):
                    break
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.count("hello, n") == 30


def test_direct_dsn_without_transaction_pooling_is_refused(dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asynqpg_trio._cli", "--dsn", dsn, "--direct-dsn", dsn, "stats"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--direct-dsn is only used with --transaction-pooling" in proc.stderr
