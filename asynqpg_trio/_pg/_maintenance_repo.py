"""The maintenance repository: leader election, rescue and clean, one method per statement.

Theory of operation
-------------------
Every query lives in ``_pg/sql/maintenance.sql`` (loaded by the one loader, `_sql.load`); this
module binds parameters, checks out its own connections and turns rows into frozen values, so
the elector, the janitor and the cleaner (``_maintenance/``) run no SQL and hold no connection.
`PgMaintenance` implements, on a `Pool`, the part of it they use: the `MaintenanceRepository`
Protocol (``_core/_rows.py``, beside the tasks repository's).

Every write is fenced in SQL on the leader row (see the SQL file): a caller that lost the
leadership without knowing it changes nothing.  Rescue is decide-in-Python: `rescue_batch`
locks a batch of expired leases, hands them to the caller's pure ``decide`` function
(`_core._rescue.plan_rescue`) inside the same transaction, and writes the plan it returns.

Cancellation: every method is a checkpoint; a cancelled rescue batch rolls back, every other
method is one statement, done or not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio

from .._core._rescue import ExpiredLease, RescueBatch
from ._sql import load
from ._tasks_repo import bounded_transaction

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._core._rescue import RescuePlan
    from ._conn import Connection
    from ._pool import Pool

__all__ = ["QUERIES", "MaintenanceQueries", "PgMaintenance"]


@dataclass(frozen=True, slots=True)
class MaintenanceQueries:
    """The statements of ``_pg/sql/maintenance.sql``, one attribute per named block."""

    elect: str
    resign: str
    listen: str
    select_expired: str
    update_rescued: str
    clean: str


#: The loaded maintenance statements.
QUERIES: MaintenanceQueries = load(MaintenanceQueries, "maintenance.sql")


@final
class PgMaintenance:
    """`MaintenanceRepository` on a `Pool` (LISTEN takes a connection of its own,
    `Pool.connect`, closed when `resignations` exits)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @property
    def closed(self) -> bool:
        return self._pool.closed

    async def elect(self, group: str, me: str, ttl: float) -> float | None:
        async with self._pool.connection() as conn:
            sent = anyio.current_time()
            cur = await conn.execute(QUERIES.elect, {"group": group, "me": me, "ttl": ttl})
            row = await cur.fetchone()
        return None if row is None else sent

    async def resign(self, group: str, me: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(QUERIES.resign, {"group": group, "me": me})
            return await cur.fetchone() is not None

    @asynccontextmanager
    async def resignations(self, group: str) -> AsyncIterator[AsyncIterator[None]]:
        if not self._pool.has_session:
            # Behind a transaction pooler with no direct DSN: no LISTEN, so followers hear
            # of a resignation only at their next campaign (renew_interval).
            async with aclosing(_never()) as never:
                yield never
            return
        conn: Connection[Any] = await self._pool.connect()
        try:
            await conn.set_autocommit(True)
            await conn.execute(QUERIES.listen)
            yield _resigned(conn, group)
        finally:
            await conn.close()

    async def rescue_batch(
        self,
        group: str,
        me: str,
        batch_size: int,
        decide: Callable[[Sequence[ExpiredLease]], RescuePlan],
        idle_timeout: float | None,
    ) -> RescueBatch:
        rescued = failed = 0
        fence = {"group": group, "me": me}
        async with self._pool.connection() as conn, bounded_transaction(conn, idle_timeout):
            cur = await conn.execute(QUERIES.select_expired, {**fence, "batch": batch_size})
            rows = [ExpiredLease(*row) for row in await cur.fetchall()]
            if not rows:
                return RescueBatch(locked=0, rescued=0, failed=0)
            plan = decide(rows)
            cur = await conn.execute(
                QUERIES.update_rescued,
                {
                    **fence,
                    "ids": list(plan.ids),
                    "tokens": list(plan.tokens),
                    "statuses": list(plan.statuses),
                    "delays": list(plan.delays),
                    "messages": list(plan.messages),
                },
            )
            for _id, status in await cur.fetchall():
                if status == "failed":
                    failed += 1
                else:
                    rescued += 1
        return RescueBatch(locked=len(rows), rescued=rescued, failed=failed)

    async def clean_batch(
        self, group: str, me: str, status: str, retention: float, batch_size: int
    ) -> int:
        params = {
            "group": group,
            "me": me,
            "status": status,
            "retention": float(retention),
            "batch": batch_size,
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(QUERIES.clean, params)
            return cur.rowcount


async def _never() -> AsyncGenerator[None]:
    await anyio.sleep_forever()
    yield None  # pragma: no cover - never reached


async def _resigned(conn: Connection[Any], group: str) -> AsyncIterator[None]:
    async for note in conn.notifies():
        if note.payload == group:
            yield None
