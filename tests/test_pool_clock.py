"""The pool's and the connection's deadlines, back-off and idle ages run on the event loop's
clock, so under Trio's ``autojump_clock`` they pass in virtual time.

No database: `Connection.connect` is replaced by a stand-in whose connections hold only a
socket pair (the pool's health check selects on the socket), or, for the connection's own
connect deadline, a local socket that listens and never answers.  Each test asserts what
happened in virtual time (when a wait gave up, how many attempts fitted before a deadline): a
deadline read from `time.monotonic`, which the virtual clock does not move, would give other
figures.  (The database-backed pool tests are in test_conn.py.)
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
import trio.testing
from psycopg import pq

from asynqpg_trio import ConnectionFailed
from asynqpg_trio._pg._conn import Connection
from asynqpg_trio._pg._pool import Pool
from asynqpg_trio._pg._sql import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterator


class _PgConn:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock.fileno()
        self.status = pq.ConnStatus.OK
        self.transaction_status = pq.TransactionStatus.IDLE


class _Conn:
    """Just enough of a `Connection` for the pool: idle, open, and it records statements."""

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair()
        self.pgconn = _PgConn(self._ours)
        self.closed = False
        self.executed: list[str] = []

    async def execute(self, query: str) -> None:
        await trio.lowlevel.checkpoint()
        self.executed.append(query)

    def _close_now(self) -> None:
        self.closed = True
        self._ours.close()
        self._theirs.close()


class _Server:
    """The stand-in for `Connection.connect`: fails ``failures`` times, then hands out
    `_Conn`s, remembering each (closed at teardown)."""

    def __init__(self, failures: float = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.made: list[_Conn] = []

    async def connect(self, dsn: str, **kwargs: Any) -> _Conn:
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self.attempts <= self.failures:
            raise psycopg.OperationalError("connection refused (stand-in)")
        conn = _Conn()
        self.made.append(conn)
        return conn


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    stand_in = _Server()
    monkeypatch.setattr(Connection, "connect", stand_in.connect)
    yield stand_in
    for conn in stand_in.made:
        if not conn.closed:
            conn._close_now()


def _small_pool(max_size: int = 1, *, reconnect_timeout: float = 5.0) -> Pool:
    return Pool(
        "dbname=virtual",
        min_size=0,
        max_size=max_size,
        check_idle_after=10.0,
        reconnect_timeout=reconnect_timeout,
        return_timeout=5.0,
        connect_kwargs={},
    )


async def test_waiting_on_an_exhausted_pool_gives_up_in_virtual_time(
    autojump_clock: trio.testing.MockClock, server: _Server
) -> None:
    pool = _small_pool(max_size=1)
    async with pool.connection():
        start = trio.current_time()
        with trio.move_on_after(30) as waited:
            async with pool.connection():
                pytest.fail("a second connection from a pool of one")
        assert waited.cancelled_caught
        assert trio.current_time() - start == pytest.approx(30)
        assert pool.statistics().waiting == 0
    async with pool.connection():  # the cancelled wait took nothing from the pool
        assert pool.statistics().in_use == 1
    pool.close()


async def test_reconnect_back_off_and_deadline_run_on_the_loop_clock(
    autojump_clock: trio.testing.MockClock, server: _Server
) -> None:
    server.failures = float("inf")
    pool = _small_pool(reconnect_timeout=30.0)
    start = trio.current_time()
    with pytest.raises(ConnectionFailed, match="stand-in"):
        async with pool.connection():
            pytest.fail("connected to a server that refuses every connection")
    spent = trio.current_time() - start
    # Back-off 0.05, 0.1, ... 1.6, then 2 s steps; the last sleep would pass the deadline.
    assert 28.0 <= spent <= 30.0
    assert server.attempts == pool.statistics().connect_failures == 20
    pool.close()


async def test_a_failing_connect_recovers_within_the_deadline(
    autojump_clock: trio.testing.MockClock, server: _Server
) -> None:
    server.failures = 3  # back-off 0.05 + 0.1 + 0.2 s, then it connects
    pool = _small_pool(reconnect_timeout=30.0)
    start = trio.current_time()
    async with pool.connection():
        assert trio.current_time() - start == pytest.approx(0.35)
    assert pool.statistics().connect_failures == 3
    pool.close()


async def test_idle_age_is_measured_on_the_loop_clock(
    autojump_clock: trio.testing.MockClock, server: _Server
) -> None:
    pool = _small_pool()
    async with pool.connection() as conn:
        pass
    await trio.sleep(9)  # idle for less than check_idle_after: handed out as it is
    async with pool.connection() as again:
        assert again is conn
    assert server.made[0].executed == []
    await trio.sleep(11)  # idle for longer: pinged first
    async with pool.connection() as again:
        assert again is conn
    assert server.made[0].executed == [SCHEMA.ping]
    pool.close()


async def test_connect_timeout_passes_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that accepts the TCP connection and never answers: libpq's
    ``connect_timeout`` is a deadline on the loop clock."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            await Connection.connect(
                f"host=127.0.0.1 port={port} user=x dbname=x connect_timeout=20 sslmode=disable"
            )
        assert trio.current_time() - start == pytest.approx(20, abs=0.5)


async def test_connect_timeout_is_one_deadline_over_many_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that answers one byte every 15 s: every wait is shorter than the timeout, so
    only a deadline that the virtual clock moves ends the connect at 20 s."""
    auth_ok = b"R\x00\x00\x00\x08\x00\x00\x00\x00"

    async def dribble(listener: trio.SocketListener) -> None:
        async with await listener.accept() as stream:
            await stream.receive_some()  # the startup packet
            for byte in auth_ok:
                await stream.send_all(bytes([byte]))
                await trio.sleep(15)
            await trio.sleep_forever()

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(dribble, listener)
        start = trio.current_time()
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            await Connection.connect(
                f"host=127.0.0.1 port={port} user=x dbname=x connect_timeout=20 sslmode=disable"
            )
        assert trio.current_time() - start == pytest.approx(20, abs=0.5)
        nursery.cancel_scope.cancel()
