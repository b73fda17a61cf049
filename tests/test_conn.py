"""The Trio/asyncio-native connection and pool, on both anyio backends, against real PostgreSQL.

Each scenario is an async function run under ``anyio.run`` once per backend, so one code path is
proven on Trio and on asyncio.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest

from asynqpg_trio import connect, open_pool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BACKENDS = ["trio", "asyncio"]


def run(backend: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return anyio.run(fn, *args, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_execute_fetch_transaction(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        conn = await connect(dsn)
        try:
            cur = await conn.execute("SELECT %s::int + 1, %s::text", (41, "x"))
            assert await cur.fetchone() == (42, "x")
            await conn.execute("CREATE TABLE t (a int)")
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (2)")
                    raise ZeroDivisionError
            cur = await conn.execute("SELECT array_agg(a) FROM t")
            assert await cur.fetchone() == ([1],)
        finally:
            await conn.close()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_errors_are_psycopg_classes(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        conn = await connect(dsn)
        try:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conn.execute("SELECT 1/0")
            with pytest.raises(psycopg.errors.UndefinedTable):
                await conn.execute("SELECT * FROM nowhere")
            cur = await conn.execute("SELECT 1")  # still usable
            assert await cur.fetchone() == (1,)
        finally:
            await conn.close()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_listen_notify(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        listener = await connect(dsn)
        sender = await connect(dsn)
        try:
            await listener.execute("LISTEN chan")
            await sender.execute("SELECT pg_notify('chan', 'hello')")
            got = [n async for n in listener.notifies(timeout=5, stop_after=1)]
            assert [(n.channel, n.payload) for n in got] == [("chan", "hello")]
        finally:
            await listener.close()
            await sender.close()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pipeline(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        conn = await connect(dsn)
        try:
            async with conn.pipeline():
                curs = [await conn.execute("SELECT %s::int", (i,)) for i in range(20)]
            assert [(await c.fetchone()) for c in curs] == [(i,) for i in range(20)]
        finally:
            await conn.close()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancelled_query_is_cancelled_on_server(backend: str, dsn: str) -> None:
    async def scenario() -> float:
        async with open_pool(dsn, min_size=1, max_size=1) as pool:
            start = time.monotonic()
            with anyio.move_on_after(0.2):
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(10)")
            elapsed = time.monotonic() - start
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'"
                    " AND state = 'active'"
                )
                assert await cur.fetchone() == (0,)
                cur = await conn.execute("SELECT 7")
                assert await cur.fetchone() == (7,)
            assert pool.statistics().discarded == 0
            return elapsed

    assert run(backend, scenario) < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_terminated_backend_is_replaced(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        async with open_pool(dsn, min_size=2, max_size=2) as pool:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT pg_backend_pid()")
                row = await cur.fetchone()
                assert row is not None
                victim = row[0]
            killer = await connect(dsn)
            try:
                await killer.execute("SELECT pg_terminate_backend(%s)", (victim,))
                await anyio.sleep(0.1)
            finally:
                await killer.close()
            for _ in range(4):
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT pg_backend_pid()")
                    row = await cur.fetchone()
                    assert row is not None
                    assert row[0] != victim
            assert pool.statistics().discarded >= 1

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_thousand_round_trips(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        async with open_pool(dsn, min_size=1, max_size=2) as pool:
            total = 0
            for _ in range(10_000):
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT 1")
                    row = await cur.fetchone()
                    assert row is not None
                    total += row[0]
            assert total == 10_000
            assert pool.statistics().checkouts == 10_000

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_bounded_and_waiting_is_cancellable(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        async with open_pool(dsn, min_size=0, max_size=1) as pool:
            async with pool.connection():
                assert pool.statistics().in_use == 1
                with anyio.move_on_after(0.1) as scope:
                    async with pool.connection():
                        pytest.fail("a second connection was handed out beyond max_size")
                assert scope.cancelled_caught
                assert pool.statistics().waiting == 0
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_rolls_back_on_error_and_commits_on_success(backend: str, dsn: str) -> None:
    async def scenario() -> None:
        async with open_pool(dsn, min_size=1, max_size=1) as pool:
            async with pool.connection() as conn:
                await conn.execute("CREATE TABLE t (a int)")
            with pytest.raises(RuntimeError):
                async with pool.connection() as conn:
                    await conn.execute("BEGIN")
                    await conn.execute("INSERT INTO t VALUES (1)")
                    raise RuntimeError("boom")
            async with pool.connection() as conn:
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO t VALUES (2)")
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT array_agg(a) FROM t")
                assert await cur.fetchone() == ([2],)

    run(backend, scenario)


def test_bad_dsn_raises_operational_error(dsn: str) -> None:
    async def scenario() -> None:
        with pytest.raises(psycopg.OperationalError):
            await connect("host=127.0.0.1 port=1 dbname=x connect_timeout=2")

    run("trio", scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_at_transaction_exit_returns_an_idle_connection(
    backend: str, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancellation that reaches a transaction block's exit (the body ended, or was itself
    cancelled) must still end the transaction: the connection goes back to the pool idle,
    never inside a transaction block, and nothing is logged."""

    async def scenario() -> None:
        async with open_pool(dsn, min_size=1, max_size=1) as pool:
            async with pool.connection() as conn:
                await conn.execute("CREATE TABLE t (a int)")
            for i in range(10):
                # The scope is cancelled when the block ends: the exit runs cancelled.
                with anyio.CancelScope() as scope:
                    async with pool.connection() as conn, conn.transaction():
                        await conn.execute("INSERT INTO t VALUES (%s)", (i,))
                        scope.cancel()
                # Cancelled in the middle of a query: the exit rolls back, cancelled.
                with anyio.move_on_after(0.02):
                    async with pool.connection() as conn, conn.transaction():
                        await conn.execute("INSERT INTO t VALUES (-1)")
                        await conn.execute("SELECT pg_sleep(5)")
                stats = pool.statistics()
                assert (stats.idle, stats.discarded) == (1, 0), stats
                async with pool.connection() as conn:
                    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT array_agg(a ORDER BY a) FROM t")
                assert await cur.fetchone() == (list(range(10)),)

    with caplog.at_level("WARNING"):
        run(backend, scenario)
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []


_CTRL_C_DURING_A_QUERY = """
import os, signal, sys, threading, time
import psycopg
import trio
from asynqpg_trio import open_pool

def interrupt_once_running(dsn):
    # Ctrl-C while the query runs: wait until the server shows it, then send SIGINT.
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
            " AND state = 'active'"
        ).fetchone()[0]:
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)

async def main(dsn):
    async with open_pool(dsn, min_size=1, max_size=1) as pool:
        threading.Thread(target=interrupt_once_running, args=(dsn,), daemon=True).start()
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(30)")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                " AND state = 'active'"
            )
            print("still running:", (await cur.fetchone())[0], flush=True)

trio.run(main, sys.argv[1])
"""


def test_ctrl_c_during_a_query_cancels_it_on_the_server(dsn: str) -> None:
    """Ctrl-C (KeyboardInterrupt, not a cancellation) while a query runs: the query is
    cancelled on the server and the pool goes on with a clean connection, at once."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _CTRL_C_DURING_A_QUERY, dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["interrupted", "still running: 0"], proc.stderr
    assert "Traceback" not in proc.stderr
