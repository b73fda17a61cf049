"""The statements of ``sql/consumers.sql``: the consumer registry and the message stamps.

Theory of operation
-------------------
The consumer writes its own row through `PgRegistry` (the `RegistryRepository` its lease
keeper uses), each call on a pooled connection of its own.  Readers (the CLI's ``consumers``
command, the dashboard) call `list_consumers`: the live rows and, in a second statement, the
running tasks each holds, joined here (a consumer holds at most a few hundred).  Rows become
frozen `_core._consumers` values; JSON columns are decoded by psycopg.

`message_stamps` reads one task's message times (migration 0006), for its timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from .._core._consumers import DEAD_AFTER, ConsumerRow, Registration, RunningTask
from ._migrate import schema_required
from ._sql import load

if TYPE_CHECKING:
    from ._conn import Connection
    from ._pool import Pool

__all__ = [
    "QUERIES",
    "ConsumerQueries",
    "PgRegistry",
    "list_consumers",
    "message_stamps",
]

#: The most running tasks listed across all consumers in one read.
RUNNING_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class ConsumerQueries:
    """The statements of ``_pg/sql/consumers.sql``, one attribute per named block."""

    register_consumer: str
    heartbeat_consumer: str
    deregister_consumer: str
    list_consumers: str
    running_by_owner: str
    message_stamps: str


#: The loaded registry statements.
QUERIES: ConsumerQueries = load(ConsumerQueries, "consumers.sql")


async def list_consumers(conn: Connection[Any]) -> list[ConsumerRow]:
    """The live consumers, oldest first, each with the tasks running under its lease."""
    with schema_required():
        cur = await conn.execute(QUERIES.list_consumers, {"dead_after": DEAD_AFTER})
        rows = await cur.fetchall()
        if not rows:
            return []
        ids = [str(r[0]) for r in rows]
        cur = await conn.execute(QUERIES.running_by_owner, {"owners": ids, "limit": RUNNING_LIMIT})
        running: dict[str, list[RunningTask]] = {}
        for values in await cur.fetchall():
            task = RunningTask(*values)
            running.setdefault(task.owner, []).append(task)
    return [
        ConsumerRow(
            id=r[0],
            host=r[1],
            pid=r[2],
            version=r[3],
            queues=dict(r[4]),
            handlers={str(k): int(v) for k, v in dict(r[5]).items()},
            heartbeat_every=float(r[6]),
            in_flight=int(r[7]),
            started_at=r[8],
            heartbeat_at=r[9],
            heartbeat_age=max(0.0, float(r[10])),
            running=tuple(running.get(r[0], ())),
        )
        for r in rows
    ]


async def message_stamps(
    conn: Connection[Any], task_id: int
) -> tuple[list[datetime | None], list[datetime | None]] | None:
    """One task's message times and attempt starts (None: no such task)."""
    with schema_required():
        cur = await conn.execute(QUERIES.message_stamps, {"id": task_id})
    row = await cur.fetchone()
    if row is None:
        return None
    return list(row[0]), list(row[1])


@dataclass(frozen=True, slots=True, eq=False)
class PgRegistry:
    """The lease keeper's `RegistryRepository` on a pool: each method checks out a connection
    of its own."""

    pool: Pool

    async def register(self, registration: Registration, in_flight: int) -> None:
        """Insert or refresh the row; delete the rows of dead consumers."""
        params = {
            "id": registration.consumer_id,
            "host": registration.host,
            "pid": registration.pid,
            "version": registration.version,
            "queues": Jsonb(dict(registration.queues)),
            "handlers": Jsonb(dict(registration.handlers)),
            "heartbeat_every": registration.heartbeat_every,
            "in_flight": in_flight,
            "dead_after": DEAD_AFTER,
        }
        async with self.pool.connection() as conn:
            await conn.execute(QUERIES.register_consumer, params)

    async def heartbeat(self, consumer_id: str, in_flight: int) -> bool:
        """Record a heartbeat; False when the row is gone."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                QUERIES.heartbeat_consumer, {"id": consumer_id, "in_flight": in_flight}
            )
            return await cur.fetchone() is not None

    async def deregister(self, consumer_id: str) -> None:
        """Delete the row."""
        async with self.pool.connection() as conn:
            await conn.execute(QUERIES.deregister_consumer, {"id": consumer_id})
