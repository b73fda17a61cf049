"""The statements of ``sql/queues.sql``: pause and resume, per-queue counts, limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core._queues import Limit, LimitParams, QueueInfo
from ._sql import load

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "QUERIES",
    "clear_limit",
    "list_limits",
    "pause_queue",
    "queue_counts",
    "resume_queue",
    "set_limit",
]


@dataclass(frozen=True, slots=True)
class QueueQueries:
    """The statements of ``_pg/sql/queues.sql``, one attribute per named block."""

    pause_queue: str
    resume_queue: str
    queue_counts: str
    set_limit: str
    clear_limit: str
    list_limits: str


QUERIES: QueueQueries = load(QueueQueries, "queues.sql")


async def pause_queue(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    """Pause ``name``; whether it was running before."""
    cur = await conn.execute(QUERIES.pause_queue, {"name": name})
    row = await cur.fetchone()
    return bool(row and row[0])


async def resume_queue(conn: psycopg.AsyncConnection[Any], name: str) -> bool:
    """Resume ``name`` (waking idle consumers); whether it was paused."""
    cur = await conn.execute(QUERIES.resume_queue, {"name": name})
    row = await cur.fetchone()
    return bool(row and row[0])


async def queue_counts(conn: psycopg.AsyncConnection[Any]) -> list[QueueInfo]:
    """Every queue with tasks or a pause record: counts per status, paused, oldest ready."""
    cur = await conn.execute(QUERIES.queue_counts)
    return [
        QueueInfo(name, bool(paused), {k: int(v) for k, v in counts.items()}, lag)
        for name, paused, counts, lag in await cur.fetchall()
    ]


async def set_limit(conn: psycopg.AsyncConnection[Any], limit: LimitParams) -> None:
    """Create or replace a limit (a rate limit's bucket starts full)."""
    await conn.execute(
        QUERIES.set_limit,
        {
            "scope": limit.scope,
            "name": limit.name,
            "max_running": limit.max_running,
            "rate": limit.rate,
            "period": limit.period,
            "burst": limit.burst,
        },
    )


async def clear_limit(conn: psycopg.AsyncConnection[Any], scope: str, name: str) -> bool:
    """Remove a limit; whether there was one."""
    cur = await conn.execute(QUERIES.clear_limit, {"scope": scope, "name": name})
    return await cur.fetchone() is not None


async def list_limits(conn: psycopg.AsyncConnection[Any]) -> list[Limit]:
    """Every limit, with the running tasks it covers now."""
    cur = await conn.execute(QUERIES.list_limits)
    return [
        Limit(scope, name, max_running, rate, per, burst, int(running))
        for scope, name, max_running, rate, per, burst, running in await cur.fetchall()
    ]
