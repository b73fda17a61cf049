"""Scenario 2: the PostgreSQL server restarted mid-run, and every connection terminated.

Injects, on a private embedded server (the shared one is never touched), while two consumers
(one process, each with its own pool, 2 s leases, maintenance on) work through 3,000 tasks:
a quick restart (fast shutdown, start), three rounds of ``pg_terminate_backend`` on every
backend of the database, and an outage longer than the lease (3 s) so leases expire while
the server is down.

Checks: neither consumer fails (transient errors restart their actors), both keep going after
each fault, no completion is written twice (the consumers' completed counts stay within the
completed rows, the difference being writes whose reply the restart ate), and the books
balance.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
import psycopg
import pytest

from asynqpg_trio import (
    ConstantRetryPolicy,
    connect,
    migrate,
    open_consumer,
    open_pool,
    sync,
)

from .books import check_books
from .pgserver import RestartableServer, restartable_server
from .procs import fast_maintenance
from .workload import (
    RUNS_DDL,
    Mix,
    Recorder,
    deadlocks,
    make_handlers,
    standard_tasks,
    wait_settled_async,
)

pytestmark = pytest.mark.faults

MIX = Mix(fast=1300, slow=1200, flaky=300, doomed=200, slow_range=(0.1, 0.5))
WORKERS = {"fast": 10, "slow": 20, "flaky": 10, "doomed": 5}


async def open_tasks(dsn: str) -> int | None:
    """Tasks still pending or running, or None while the server is unreachable."""
    try:
        conn = await connect(dsn)
    except psycopg.OperationalError:
        return None
    try:
        cur = await conn.execute(
            "SELECT count(*) FROM asynqpg_tasks WHERE status IN ('pending', 'running')"
        )
        row = await cur.fetchone()
        return None if row is None else int(row[0])
    except psycopg.OperationalError:
        return None
    finally:
        await conn.close()


async def terminate_all(dsn: str) -> int:
    """pg_terminate_backend every other backend of the database; return how many."""
    conn = await connect(dsn)
    try:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])
    finally:
        await conn.close()


async def outage(server: RestartableServer, seconds: float) -> None:
    await anyio.to_thread.run_sync(server.stop)
    await anyio.sleep(seconds)
    await anyio.to_thread.run_sync(server.start)


async def test_server_restart_and_terminated_backends(caplog: pytest.LogCaptureFixture) -> None:
    with restartable_server() as server:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("CREATE DATABASE faults")
        dsn = server.dsn_for("faults")
        await migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(RUNS_DDL)
            sync.enqueue_many(conn, standard_tasks(MIX, seed=2))

        faults: list[str] = []
        async with AsyncExitStack() as stack:
            record_pool = await stack.enter_async_context(open_pool(dsn, max_size=10))
            consumers = [
                await stack.enter_async_context(
                    open_consumer(
                        dsn,
                        handlers=make_handlers(Recorder(record_pool, name), workers=WORKERS),
                        consumer_id=name,
                        lease_duration=2.0,
                        poll_interval=0.2,
                        retry_policy=ConstantRetryPolicy(0.05),
                        maintenance=fast_maintenance(),
                    )
                )
                for name in ("C1", "C2")
            ]

            async def mid_run(what: str) -> None:
                left = await open_tasks(dsn)
                assert left, f"the workload ended before {what}"
                faults.append(what)

            await anyio.sleep(1.0)
            await mid_run("a quick restart")
            await outage(server, 0.3)
            for _ in range(3):
                await anyio.sleep(1.0)
                await mid_run("pg_terminate_backend")
                assert await terminate_all(dsn) > 0
            await anyio.sleep(1.0)
            await mid_run("a 3 s outage")
            started = time.monotonic()
            await outage(server, 3.0)
            assert time.monotonic() - started >= 3.0
            await wait_settled_async(dsn, timeout=90)
            stats = [c.statistics() for c in consumers]

        with psycopg.connect(dsn, autocommit=True) as conn:
            totals = check_books(conn)
            rows: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM asynqpg_tasks GROUP BY 1").fetchall()
            )
    assert not deadlocks(caplog.records)
    completed_writes = sum(s.completed for s in stats)
    stale = sum(s.stale_acks for s in stats)
    restarts = sum(s.actor_restarts for s in stats)
    assert completed_writes <= rows["completed"] <= completed_writes + stale
    assert restarts > 0
    print(
        f"\nscenario 2: {len(faults)} faults ({', '.join(faults)}); {restarts} actor restarts,"
        f" {stale} stale acks; {totals}"
    )
    assert totals.tasks == MIX.total
