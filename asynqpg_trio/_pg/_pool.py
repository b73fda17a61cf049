"""A bounded connection pool for Trio and asyncio that needs no background task.

Theory of operation
-------------------
The pool is a semaphore of ``max_size`` slots plus a stack of idle connections.  Checking out
takes a slot (a cancellable wait), then the most recently used idle connection, or opens a new
one when none is idle.  All the work happens in the caller's task, so the pool owns no task and
cannot leak one; `open_pool` only opens ``min_size`` connections up front and closes everything
on exit.

Health: an idle connection whose socket became readable was told something by the server while
nobody was listening, normally that its backend was terminated; such a connection, and one idle
for longer than ``check_idle_after`` seconds, is pinged with ``SELECT 1`` and replaced when the
ping fails.  A failed connect is retried
with exponential back-off for up to ``reconnect_timeout`` seconds before the error reaches the
caller, as `ConnectionFailed`.  A DSN that cannot be parsed is refused at construction.

Time: idle ages, the reconnect deadline and the back-off read the event loop's clock
(`anyio.current_time`), never the wall or the process clock, so under Trio's ``autojump_clock``
they all pass in virtual time, and so do the connection's own deadlines (``_conn``).

On return a connection goes back to the idle stack only when it is open and idle; a leftover
transaction is committed (clean exit) or rolled back (error), shielded and bounded by
``return_timeout``; anything else is closed and its slot freed.

Poolers: behind a transaction-mode pooler (PgBouncer ``pool_mode = transaction``) each
transaction may run on a different server session, so nothing may outlive a transaction.  With
``transaction_pooling`` the pooled connections never prepare statements on the server
(``prepare_threshold=None``), and session-scoped work (LISTEN, the migration lock) uses
`Pool.connect`, which opens its dedicated connection on ``direct_dsn``; without a
``direct_dsn`` there is no session to be had (`Pool.has_session` is False): consumers poll
instead of listening and `migrate` refuses.  Everything else the package runs is one
statement or one transaction with transaction-local settings only (``set_config(..., true)``).
"""

from __future__ import annotations

import logging
import select
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import psycopg
from psycopg import conninfo, pq

from .._core._errors import ConfigurationError, ConnectionFailed
from ._conn import Connection
from ._sql import SCHEMA

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Pool", "PoolStatistics", "open_pool", "owned_pool", "pool_for"]

logger = logging.getLogger("asynqpg_trio.pool")

_IDLE = pq.TransactionStatus.IDLE
_INTRANS = pq.TransactionStatus.INTRANS
_INERROR = pq.TransactionStatus.INERROR


class _ConnectionFailed(ConnectionFailed, psycopg.OperationalError):
    """`ConnectionFailed` as raised: also a psycopg OperationalError, the error every actor
    already treats as a (transient) loss of the database.

    Users never see this private class's own name: it calls itself
    ``asynqpg_trio.ConnectionFailed`` (in tracebacks, ``repr`` and ``type(error).__name__``)
    and pickles through `_connection_failed`, since pickle cannot find it by that name.
    """

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_connection_failed, (str(self),))


_ConnectionFailed.__module__ = ConnectionFailed.__module__
_ConnectionFailed.__name__ = _ConnectionFailed.__qualname__ = ConnectionFailed.__name__


def _connection_failed(message: str) -> _ConnectionFailed:
    return _ConnectionFailed(message)


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool's state, from `Pool.statistics`.

    Attributes:
        max_size: the most connections the pool opens at once.
        open: connections open now (idle plus in use).
        idle: open connections waiting in the pool.
        in_use: connections checked out now.
        waiting: tasks waiting for a free slot.
        opened: connections opened since the pool was created.
        discarded: connections closed because they were broken or left in a bad state.
        connect_failures: failed connection attempts.
        checkouts: successful checkouts.
    """

    max_size: int
    open: int
    idle: int
    in_use: int
    waiting: int
    opened: int
    discarded: int
    connect_failures: int
    checkouts: int


@final
class Pool:
    """A bounded pool of `Connection` objects.  Made by `open_pool`."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        check_idle_after: float,
        reconnect_timeout: float,
        return_timeout: float,
        connect_kwargs: dict[str, Any],
        direct_dsn: str | None = None,
        transaction_pooling: bool = False,
    ) -> None:
        for name, value in (("dsn", dsn), ("direct_dsn", direct_dsn)):
            try:
                if value is not None:
                    conninfo.conninfo_to_dict(value)
            except psycopg.ProgrammingError as ex:
                label = "DSN" if name == "dsn" else "direct_dsn (a DSN)"
                raise ConfigurationError(
                    f"invalid {label}: {str(ex).strip()}; pass a libpq connection"
                    " string ('host=... dbname=...') or a postgresql:// URL"
                ) from None
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if not 0 <= min_size <= max_size:
            raise ValueError(
                f"min_size must be between 0 and max_size ({max_size}), got {min_size}"
            )
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._check_idle_after = check_idle_after
        self._reconnect_timeout = reconnect_timeout
        self._return_timeout = return_timeout
        self._direct_dsn = direct_dsn
        self._transaction_pooling = transaction_pooling
        self._direct_kwargs = dict(connect_kwargs)
        self._connect_kwargs = dict(connect_kwargs)
        if transaction_pooling:
            # A server-side prepared statement lives in one server session, which a
            # transaction pooler hands to another client after the transaction.
            self._connect_kwargs["prepare_threshold"] = None
        self._slots = anyio.Semaphore(max_size, fast_acquire=True)
        self._idle: deque[tuple[Connection[Any], float]] = deque()
        self._in_use = 0
        self._waiting = 0
        self._opened = 0
        self._discarded = 0
        self._connect_failures = 0
        self._checkouts = 0
        self._closed = False

    @property
    def dsn(self) -> str:
        """The connection string this pool connects with."""
        return self._dsn

    @property
    def direct_dsn(self) -> str | None:
        """The connection string dedicated connections (`connect`) use, if not `dsn`."""
        return self._direct_dsn

    @property
    def transaction_pooling(self) -> bool:
        """Whether `dsn` goes through a transaction-mode pooler (see `open_pool`)."""
        return self._transaction_pooling

    @property
    def has_session(self) -> bool:
        """Whether `connect` gives a session of its own (LISTEN, session advisory locks):
        True unless `dsn` goes through a transaction pooler and no ``direct_dsn`` is given."""
        return self._direct_dsn is not None or not self._transaction_pooling

    @property
    def max_size(self) -> int:
        """The most connections this pool opens at once."""
        return self._max_size

    def statistics(self) -> PoolStatistics:
        """Return a frozen snapshot of the pool's counters."""
        return PoolStatistics(
            max_size=self._max_size,
            open=len(self._idle) + self._in_use,
            idle=len(self._idle),
            in_use=self._in_use,
            waiting=self._waiting,
            opened=self._opened,
            discarded=self._discarded,
            connect_failures=self._connect_failures,
            checkouts=self._checkouts,
        )

    async def connect(self) -> Connection[Any]:
        """Open a new connection with the pool's settings, outside the pool.

        For long-lived dedicated connections (LISTEN, the migration lock); the caller closes
        it.  It goes to ``direct_dsn`` when one is given (bypassing a pooler), else to `dsn`.

        Cancellation: a checkpoint; nothing stays open if cancelled.
        """
        if self._direct_dsn is not None:
            return await self._connect_with_backoff(self._direct_dsn, self._direct_kwargs)
        return await self._connect_with_backoff()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection[Any]]:
        """Check a healthy connection out for the duration of the block.

        On a clean exit a transaction left open is committed; on an error it is rolled back.

        Cancellation: waiting for a slot and connecting are checkpoints; a cancelled wait takes
        nothing from the pool.
        """
        if self._closed:
            raise RuntimeError("the pool is closed; open a new one with open_pool()")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            conn = await self._take()
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        self._checkouts += 1
        failed = True
        try:
            yield conn
            failed = False
        finally:
            self._in_use -= 1
            try:
                await self._give_back(conn, failed=failed)
            finally:
                self._slots.release()

    async def _take(self) -> Connection[Any]:
        while self._idle:
            conn, since = self._idle.pop()
            if await self._healthy(conn, anyio.current_time() - since):
                return conn
            self._discard(conn)
        return await self._connect_with_backoff()

    async def _healthy(self, conn: Connection[Any], idle_for: float) -> bool:
        if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
            return False
        try:
            # Data on an idle socket is unsolicited: usually the server saying it is
            # terminating this backend.  Ping to find out.
            readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
            # A negative age is a stamp from another event loop's clock (a lazy pool reused
            # by a later run): unknown, so ping too.
            if readable or not 0.0 <= idle_for < self._check_idle_after:
                await conn.execute(SCHEMA.ping)
        except (OSError, psycopg.Error):
            return False
        return True

    async def _connect_with_backoff(
        self, dsn: str | None = None, kwargs: dict[str, Any] | None = None
    ) -> Connection[Any]:
        dsn = self._dsn if dsn is None else dsn
        kwargs = self._connect_kwargs if kwargs is None else kwargs
        deadline = anyio.current_time() + self._reconnect_timeout
        delay = 0.05
        while True:
            try:
                conn: Connection[Any] = await Connection.connect(dsn, **kwargs)
            except psycopg.OperationalError as ex:
                self._connect_failures += 1
                if anyio.current_time() + delay > deadline:
                    raise _ConnectionFailed(str(ex).strip()) from ex
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._opened += 1
            return conn

    async def _give_back(self, conn: Connection[Any], *, failed: bool) -> None:
        if self._closed or conn.closed:
            self._discard(conn)
            return
        status = conn.pgconn.transaction_status
        if status in (_INTRANS, _INERROR):
            with anyio.move_on_after(self._return_timeout, shield=True):
                try:
                    if failed or status == _INERROR:
                        await conn.rollback()
                    else:
                        await conn.commit()
                except psycopg.Error as ex:
                    logger.warning("could not end a transaction left open (%s)", ex)
            status = conn.pgconn.transaction_status
        if status == _IDLE and not conn.closed:
            self._idle.append((conn, anyio.current_time()))
        else:
            self._discard(conn)

    def _discard(self, conn: Connection[Any]) -> None:
        self._discarded += 1
        conn._close_now()

    async def _fill(self) -> None:
        for _ in range(self._min_size):
            self._idle.append((await self._connect_with_backoff(), anyio.current_time()))

    def close(self) -> None:
        """Close the idle connections and refuse new checkouts (not a checkpoint).

        Connections in use are closed when they come back.
        """
        self._closed = True
        while self._idle:
            conn, _ = self._idle.pop()
            conn._close_now()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed


def pool_for(pool_or_dsn: Pool | str, *, max_size: int = 4) -> tuple[Pool, bool]:
    """Return ``(pool, owned)``: the given pool, or a new lazy pool for a DSN (owned=True).

    A lazy pool opens connections on first use and needs no task, so sync constructors
    (``Producer(dsn)``) can make one; the owner calls `Pool.close` when done.
    """
    if isinstance(pool_or_dsn, Pool):
        return pool_or_dsn, False
    if not isinstance(pool_or_dsn, str) or not pool_or_dsn:
        raise TypeError(
            f"expected an asynqpg_trio.Pool or a DSN string, got {type(pool_or_dsn).__name__}"
        )
    pool = Pool(
        pool_or_dsn,
        min_size=0,
        max_size=max_size,
        check_idle_after=10.0,
        reconnect_timeout=5.0,
        return_timeout=5.0,
        connect_kwargs={"autocommit": True},
    )
    return pool, True


@asynccontextmanager
async def owned_pool(pool_or_dsn: Pool | str, *, max_size: int = 4) -> AsyncIterator[Pool]:
    """`pool_for` as a context manager: the given pool (left open), or a new lazy pool for a
    DSN, closed on exit.

    Cancellation: not a checkpoint on entry or exit.
    """
    pool, owned = pool_for(pool_or_dsn, max_size=max_size)
    try:
        yield pool
    finally:
        if owned:
            pool.close()


@asynccontextmanager
async def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    check_idle_after: float = 10.0,
    reconnect_timeout: float = 5.0,
    return_timeout: float = 5.0,
    direct_dsn: str | None = None,
    transaction_pooling: bool = False,
    **connect_kwargs: Any,
) -> AsyncIterator[Pool]:
    """Open a bounded pool of Trio/asyncio-native PostgreSQL connections.

    Args:
        dsn: a libpq connection string or URL.
        min_size: connections opened on entry.
        max_size: the most connections open at once; further checkouts wait.
        check_idle_after: ping a connection idle for longer than this many seconds before
            handing it out.
        reconnect_timeout: how long a checkout keeps retrying (with back-off) a failing
            connect before it raises `ConnectionFailed` (a `psycopg.OperationalError` too).
        return_timeout: how long ending a transaction left open on return may take.
        direct_dsn: a DSN straight to the PostgreSQL server, for the few connections that
            need a session of their own (each consumer's LISTEN connection, its leader
            election's LISTEN, `migrate`'s lock).  Give it when ``dsn`` goes through a
            transaction-mode pooler.
        transaction_pooling: ``dsn`` goes through a transaction-mode pooler (PgBouncer
            ``pool_mode = transaction``): pooled connections prepare no statements on the
            server.  Without ``direct_dsn`` consumers then run poll-only (no LISTEN: a new
            task waits up to ``poll_interval`` to be claimed, a remote cancel up to
            ``cancel_check_interval`` to reach its handler) and `migrate` refuses the pool.
        **connect_kwargs: psycopg connection parameters; ``autocommit`` defaults to True.

    Raises:
        ConfigurationError: the DSN cannot be parsed (before any I/O).
        ConnectionFailed: the first ``min_size`` connections could not be opened.

    Cancellation: entering is a checkpoint; leaving closes every connection without waiting.
    """
    connect_kwargs.setdefault("autocommit", True)
    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        check_idle_after=check_idle_after,
        reconnect_timeout=reconnect_timeout,
        return_timeout=return_timeout,
        connect_kwargs=connect_kwargs,
        direct_dsn=direct_dsn,
        transaction_pooling=transaction_pooling,
    )
    try:
        await pool._fill()
        yield pool
    finally:
        pool.close()
