"""The client's queue administration: pause and resume, per-queue counts, cluster-wide limits.

`QueueAdmin` is `Client`'s base: it owns the connection choice every client method makes (the
caller's ``conn=``, or a pooled one) and the queue methods, so the client module stays about
tasks.  Pausing, resuming and limits are rows in ``asynqpg_queues`` / ``asynqpg_limits``,
read by every consumer's claim: they hold across processes and hosts, from the next claim on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._core._errors import ConfigurationError
from .._core._queues import Limit, QueueInfo, check_limit, limit_scope
from .._core._task import check_queue
from .._pg import _queues_repo as repo
from .._pg._migrate import schema_required
from ._owner import PoolOwner

if TYPE_CHECKING:
    import psycopg

__all__ = ["QueueAdmin"]


def _queue_name(name: object) -> str:
    try:
        return check_queue(name, "queue name")
    except ValueError as ex:
        raise ConfigurationError(str(ex)) from None


class QueueAdmin(PoolOwner):
    """Queue administration, shared by `Client` (see there)."""

    @asynccontextmanager
    async def _connection(
        self, conn: psycopg.AsyncConnection[Any] | None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        with schema_required():  # every method: a database without the schema is SchemaMissing
            if conn is not None:
                yield conn
            else:
                async with self._pool.connection() as own:
                    yield own

    async def pause_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Pause a queue: no consumer claims its tasks from its next claim on (running ones
        finish).  Persisted: it stays paused across restarts until `resume_queue`.

        Returns:
            True if the queue was running, False if it was paused already.

        Raises:
            ConfigurationError: ``name`` is not a queue name (1 to 128 characters).

        Cancellation: a checkpoint; one statement, done or not.
        """
        queue = _queue_name(name)
        async with self._connection(conn) as c:
            return await repo.pause_queue(c, queue)

    async def resume_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Resume a paused queue; idle consumers are woken at once (NOTIFY, at commit).

        Returns:
            True if the queue was paused, False if it was running already.

        Raises:
            ConfigurationError: ``name`` is not a queue name.

        Cancellation: a checkpoint; one statement, done or not.
        """
        queue = _queue_name(name)
        async with self._connection(conn) as c:
            return await repo.resume_queue(c, queue)

    async def queues(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[QueueInfo, ...]:
        """Every queue that has tasks or was ever paused, by name: its counts per status,
        whether it is paused, and how long its longest-waiting ready task has waited.

        Cancellation: a checkpoint; reads only (one scan of the table, like `Client.stats`).
        """
        async with self._connection(conn) as c:
            return tuple(await repo.queue_counts(c))

    async def set_limit(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        max_running: int | None = None,
        rate: int | None = None,
        per: float | timedelta = 1.0,
        burst: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Limit a queue or a task type across every consumer (replacing its limit, if any).

        Args:
            queue: the queue to limit (give exactly one of ``queue`` and ``type``).
            type: the task type to limit.
            max_running: at most this many of its tasks running at once (0 stops it).
            rate: at most this many task starts per ``per`` seconds on average...
            per: ...(seconds or a `timedelta`, default 1)...
            burst: ...in bursts of up to this many (default ``rate``).  In any window of T
                seconds at most ``burst + rate * T / per`` start.

        Raises:
            ConfigurationError: neither or both of queue and type; no limit given; a value
                out of range.

        Consumers enforce limits in their claim; Go consumers sharing the table do not.
        Tasks held in a consumer's prefetch buffer count as running.

        Cancellation: a checkpoint; one statement, done or not.
        """
        limit = check_limit(queue, type, max_running=max_running, rate=rate, per=per, burst=burst)
        async with self._connection(conn) as c:
            await repo.set_limit(c, limit)

    async def clear_limit(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> bool:
        """Remove the limit on a queue or a task type.

        Returns:
            Whether there was one.

        Raises:
            ConfigurationError: neither or both of queue and type.

        Cancellation: a checkpoint; one statement, done or not.
        """
        scope, name = limit_scope(queue, type)
        async with self._connection(conn) as c:
            return await repo.clear_limit(c, scope, name)

    async def limits(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> tuple[Limit, ...]:
        """Every limit, with how many of its tasks run now.

        Cancellation: a checkpoint; reads only.
        """
        async with self._connection(conn) as c:
            return tuple(await repo.list_limits(c))
