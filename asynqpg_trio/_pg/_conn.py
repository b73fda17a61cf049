"""A psycopg connection that runs on Trio and on asyncio, through anyio.

Theory of operation
-------------------
psycopg 3 splits every operation into a *generator* that talks to libpq without blocking and
yields what it is waiting for (readable, writable, or both), and a *waiting function* that
sleeps until the socket is ready and sends the readiness back in.  psycopg ships waiting
functions for blocking code and for asyncio only.  `Connection` subclasses psycopg's
`AsyncConnection` and replaces the waiting functions with ones built on anyio's
`wait_readable` / `wait_writable`, so the whole of psycopg's async API (cursors, transactions,
pipelines, ``notifies()``) runs unchanged on Trio and on asyncio, one code path, no thread per
query.

Invariants:

* A wait is a checkpoint; cancelling it while a query is running sends a cancel request to the
  server (``cancel_safe``) and drains the connection under a shielded, bounded scope.  If the
  server does not confirm within `CANCEL_GRACE` seconds the libpq connection is closed, so a
  connection is never left in an unknown state: it is either idle and clean or closed.
* The per-connection lock is an anyio lock, so two tasks using one connection queue up instead of
  interleaving protocol messages.
* A transaction block's exit (``async with conn.transaction()``) always runs to its end,
  shielded and bounded by `CANCEL_GRACE`: psycopg's exit takes the connection lock, whose
  acquire is a checkpoint, so a cancellation pending at the exit (the body was cancelled, or
  ended just as its scope was) used to skip the COMMIT or ROLLBACK and leave psycopg's
  transaction stack open; the pool then refused to roll back ("Explicit rollback() forbidden
  within a Transaction context") and threw the connection away.  If the exit cannot finish
  within the grace the connection is closed, never handed back inside a transaction block.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
import psycopg
from psycopg import errors as e
from psycopg import pq
from psycopg.conninfo import conninfo_attempts, make_conninfo, timeout_from_conninfo
from psycopg.rows import AsyncRowFactory, Row, tuple_row
from psycopg.waiting import Ready, Wait

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType
    from typing import Self

    from psycopg.abc import RV, PQGen, PQGenConn
    from psycopg.pq.abc import PGconn

__all__ = ["CANCEL_GRACE", "Connection", "connect"]

logger = logging.getLogger("asynqpg_trio.conn")

#: Seconds a cancelled query gets to be confirmed cancelled by the server before the
#: connection is closed instead.
CANCEL_GRACE = 5.0

_ACTIVE = pq.TransactionStatus.ACTIVE


async def _wait_fd(fileno: int, wait: int, deadline: float | None) -> int:
    """Sleep until ``fileno`` is ready for what ``wait`` asks; return the `Ready` mask.

    Returns 0 when the deadline (on the event loop's clock, `anyio.current_time`) passes first.
    """
    if deadline is None:
        if wait == Wait.R:
            await anyio.wait_readable(fileno)
            return Ready.R
        if wait == Wait.W:
            await anyio.wait_writable(fileno)
            return Ready.W
    ready = 0
    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
        if wait == Wait.R:
            await anyio.wait_readable(fileno)
            return Ready.R
        if wait == Wait.W:
            await anyio.wait_writable(fileno)
            return Ready.W
        # Both directions: race the two waits, the first to finish wins.
        async with anyio.create_task_group() as tg:

            async def _one(flag: int) -> None:
                nonlocal ready
                if flag == Ready.R:
                    await anyio.wait_readable(fileno)
                else:
                    await anyio.wait_writable(fileno)
                ready |= flag
                tg.cancel_scope.cancel()

            tg.start_soon(_one, Ready.R)
            tg.start_soon(_one, Ready.W)
    return ready


async def _drive(gen: PQGen[RV], fileno: int, timeout: float | None) -> RV:
    """Run a psycopg generator bound to one socket to completion."""
    deadline = None if timeout is None else anyio.current_time() + timeout
    try:
        state = next(gen)
        while True:
            ready = await _wait_fd(fileno, state, deadline)
            if not ready:
                raise e._WaitTimeout("wait timeout expired")  # pyright: ignore[reportPrivateUsage]
            state = gen.send(ready)
    except StopIteration as ex:
        return cast("RV", ex.value)
    except OSError as ex:
        raise e.OperationalError("connection socket closed") from ex


async def _drive_conn(gen: PQGenConn[RV], timeout: float | None) -> RV:
    """Run a psycopg connection generator (whose socket may change) to completion."""
    deadline = None if timeout is None else anyio.current_time() + timeout
    try:
        fileno, state = next(gen)
        while True:
            ready = await _wait_fd(fileno, state, deadline)
            if not ready:
                raise e._WaitTimeout("wait timeout expired")  # pyright: ignore[reportPrivateUsage]
            fileno, state = gen.send(ready)
    except StopIteration as ex:
        return cast("RV", ex.value)
    except OSError as ex:
        raise e.OperationalError("connection socket closed") from ex


class _Transaction(psycopg.AsyncTransaction):
    """psycopg's transaction block, whose exit is shielded and bounded (see the module
    docstring): a cancelled exit still commits or rolls back, or the connection is closed."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool:
        with anyio.move_on_after(CANCEL_GRACE, shield=True):
            return await super().__aexit__(exc_type, exc_val, exc_tb)
        # The grace passed before the transaction ended: its state is unknown.
        conn = cast("Connection[Any]", self._conn)
        logger.warning("transaction not ended within %.1f s: closing the connection", CANCEL_GRACE)
        conn._close_now()
        return False


class Connection(psycopg.AsyncConnection[Row]):
    """A psycopg `AsyncConnection` that works on Trio as well as asyncio.

    Everything psycopg's async connection offers works: ``execute``, cursors,
    ``transaction()``, ``pipeline()``, ``notifies()``.  Create one with `connect`, or take one
    from a pool (`open_pool`).
    """

    def __init__(
        self,
        pgconn: PGconn,
        row_factory: AsyncRowFactory[Row] | None = None,
    ) -> None:
        super().__init__(pgconn, row_factory or cast("AsyncRowFactory[Row]", tuple_row))
        self.lock: anyio.Lock = anyio.Lock(fast_acquire=True)  # type: ignore[assignment,unused-ignore]

    @classmethod
    async def connect(
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        row_factory: AsyncRowFactory[Row] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Connect to PostgreSQL and return a new connection.

        Cancellation: a checkpoint; a cancelled connect leaves nothing open.
        """
        params = await cls._get_connection_params(conninfo, **kwargs)
        timeout = timeout_from_conninfo(params)
        # Host name resolution may block: do it in a worker thread, once per connect.
        attempts = await anyio.to_thread.run_sync(conninfo_attempts, params)
        errors: list[e.Error] = []
        conn: Self | None = None
        for attempt in attempts:
            try:
                conn = await _drive_conn(cls._connect_gen(make_conninfo("", **attempt)), timeout)
                break
            except e._WaitTimeout:  # pyright: ignore[reportPrivateUsage]
                errors.append(e.ConnectionTimeout("connection timeout expired"))
            except e.Error as ex:
                errors.append(ex)
        if conn is None:
            if len(errors) == 1:
                raise errors[0].with_traceback(None)
            detail = "; ".join(str(ex).strip() for ex in errors)
            raise type(errors[-1])(f"all connection attempts failed: {detail}")
        conn._autocommit = bool(autocommit)
        if row_factory is not None:
            conn.row_factory = row_factory
        conn.prepare_threshold = prepare_threshold
        return conn

    async def wait(self, gen: PQGen[RV], interval: float = 0.0, timeout: float | None = None) -> RV:
        """Drive ``gen`` on this connection's socket; cancel server-side work if the wait is
        cancelled or interrupted (Ctrl-C's KeyboardInterrupt, or any other exception thrown
        into it): the query never runs on after its caller has given up."""
        del interval
        try:
            return await _drive(gen, self.pgconn.socket, timeout)
        except BaseException:
            if not self.closed and self.pgconn.transaction_status == _ACTIVE:
                await self._cancel_and_drain(gen)
            raise

    async def _cancel_and_drain(self, gen: PQGen[Any]) -> None:
        """After a cancelled wait: cancel the query on the server and read its end.

        Runs shielded and bounded; on any failure the connection is closed.
        """
        with anyio.move_on_after(CANCEL_GRACE, shield=True) as scope:
            try:
                await self.cancel_safe(timeout=CANCEL_GRACE)
                await _drive(gen, self.pgconn.socket, CANCEL_GRACE)
            except e.QueryCanceled:
                return
            except BaseException as ex:
                logger.warning("query cancellation failed (%r): closing the connection", ex)
                self._close_now()
                return
        if scope.cancelled_caught:
            logger.warning(
                "query not cancelled within %.1f s: closing the connection", CANCEL_GRACE
            )
            self._close_now()

    def _close_now(self) -> None:
        if not self.closed:
            self._closed = True
            self.pgconn.finish()

    async def cancel_safe(self, *, timeout: float = 30.0) -> None:
        """Ask the server to cancel the running query without blocking the event loop."""
        if not self._should_cancel():
            return
        try:
            await _drive_conn(self._cancel_gen(), timeout or None)
        except e._WaitTimeout:  # pyright: ignore[reportPrivateUsage]
            raise e.CancellationTimeout("cancellation timeout expired") from None

    @asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[psycopg.AsyncTransaction]:
        """psycopg's ``transaction()``, with an exit that a cancellation cannot cut short.

        Cancellation: entering is a checkpoint.  Leaving ends the transaction (commit after a
        body that finished, rollback after an exception or a cancellation) shielded, for at
        most `CANCEL_GRACE` seconds; past that the connection is closed, which rolls it back.
        """
        tx = _Transaction(self, savepoint_name, force_rollback)
        if self._pipeline:
            async with self.pipeline(), tx, self.pipeline():
                yield tx
        else:
            async with tx:
                yield tx

    async def close(self) -> None:
        """Close the connection (no checkpoint when already closed)."""
        self._close_now()


async def connect(dsn: str, *, autocommit: bool = True, **kwargs: Any) -> Connection[Any]:
    """Open one Trio/asyncio-native connection to PostgreSQL.

    Args:
        dsn: a libpq connection string or URL.
        autocommit: start in autocommit mode (the default, as a queue mostly runs single
            statements); use ``conn.transaction()`` for explicit transactions.
        **kwargs: further psycopg connection parameters.

    Cancellation: a checkpoint; nothing stays open if cancelled.
    """
    return await Connection.connect(dsn, autocommit=autocommit, **kwargs)
