"""pgqueuer (asyncpg driver) under the harness's three measurements.

Theory of operation
-------------------
The schema is pgqueuer's own (``Queries.install``, durable: every table logged, as ours).
*Enqueue* is ``Queries.enqueue`` with lists (one ``unnest`` statement per chunk), the chunks
spread over ``connections`` asyncpg connections in one process.  *Burn-down* runs
``processes`` children, each with ``managers`` QueueManagers (one asyncpg connection each),
``batch_size`` jobs per dequeue; a job is done when pgqueuer has moved it from ``pgqueuer``
to ``pgqueuer_log``, so the parent waits for ``pgqueuer`` to be empty.  *Latency* runs one
QueueManager and the producer in the same process and loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .common import (
    IDLE_GAP,
    ConsumerGroup,
    asyncpg_kwargs,
    counting_remaining,
    percentile,
    run_asyncio,
)

if TYPE_CHECKING:
    from .common import Signals

__all__ = ["Settings", "burn_down", "enqueue_batch", "idle_latency", "setup", "version"]

ENTRYPOINT = "noop"
PAYLOAD = b"{}"


@dataclass(frozen=True)
class Settings:
    """pgqueuer knobs the harness turns."""

    # Best of a sweep on the 2-core reference machine (see README).
    processes: int = 4
    managers: int = 1  # QueueManagers (each one connection) per process
    batch_size: int = 200
    enqueue_chunk: int = 5000
    enqueue_connections: int = 2
    uvloop: bool = True

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict, for printing and JSON."""
        return asdict(self)


def version() -> str | None:
    """pgqueuer's version, or None when it is not installed."""
    try:
        return metadata.version("pgqueuer")
    except metadata.PackageNotFoundError:
        return None


async def _connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(**asyncpg_kwargs(dsn))


def _queries(conn: Any) -> Any:
    from pgqueuer import AsyncpgDriver, Queries

    return Queries(AsyncpgDriver(conn))


def setup(dsn: str) -> None:
    """Install pgqueuer's schema into the (fresh) database."""

    async def main() -> None:
        conn = await _connect(dsn)
        try:
            await _queries(conn).install()
        finally:
            await conn.close()

    asyncio.run(main())


def enqueue_batch(dsn: str, n: int, settings: Settings) -> float:
    """Jobs/s enqueueing N no-op jobs in chunks over several connections."""

    async def main() -> float:
        conns = [await _connect(dsn) for _ in range(settings.enqueue_connections)]
        chunks = [
            min(settings.enqueue_chunk, n - start) for start in range(0, n, settings.enqueue_chunk)
        ]
        try:
            queries = [_queries(c) for c in conns]
            started = time.perf_counter()

            async def producer(index: int) -> None:
                for size in chunks[index :: len(queries)]:
                    await queries[index].enqueue([ENTRYPOINT] * size, [PAYLOAD] * size, [0] * size)

            await asyncio.wait_for(
                asyncio.gather(*(producer(i) for i in range(len(queries)))), 300.0
            )
            return n / (time.perf_counter() - started)
        finally:
            for conn in conns:
                await conn.close()

    return run_asyncio(main(), use_uvloop=settings.uvloop)


def _consumer_child(signals: Signals, dsn: str, settings: Settings) -> None:
    try:
        run_asyncio(_consume(signals, dsn, settings), use_uvloop=settings.uvloop)
    except BaseException:
        signals.failed()
        raise


async def _consume(signals: Signals, dsn: str, settings: Settings) -> None:
    from pgqueuer import QueueManager

    conns = [await _connect(dsn) for _ in range(settings.managers)]
    managers = []
    for conn in conns:
        qm = QueueManager(_queries(conn))

        async def noop(job: Any) -> None:
            signals.bump()

        qm.entrypoint(ENTRYPOINT)(noop)
        managers.append(qm)
    loop = asyncio.get_running_loop()
    signals.ready()
    await loop.run_in_executor(None, signals.go.wait, 600.0)
    runs = [
        asyncio.create_task(
            qm.run(batch_size=settings.batch_size, dequeue_timeout=timedelta(seconds=5))
        )
        for qm in managers
    ]
    await loop.run_in_executor(None, signals.stop.wait, 600.0)
    for qm in managers:
        qm.shutdown.set()
    await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 15.0)
    for conn in conns:
        await conn.close()


def burn_down(dsn: str, n: int, settings: Settings, timeout: float = 300.0) -> float:
    """Jobs/s processing N pending no-op jobs to an empty queue."""
    remaining, close = counting_remaining(dsn, "SELECT count(*) FROM pgqueuer")
    try:
        args = [(dsn, settings)] * settings.processes
        with ConsumerGroup(_consumer_child, args) as group:
            return n / group.run_to_empty(n, remaining, timeout)
    finally:
        close()


def idle_latency(
    dsn: str, count: int, settings: Settings, gap: float = IDLE_GAP
) -> tuple[float, float]:
    """(p50, p99) ms from just before ``enqueue`` to handler start, idle consumer."""

    async def main() -> tuple[float, float]:
        from pgqueuer import QueueManager

        consumer_conn = await _connect(dsn)
        producer_conn = await _connect(dsn)
        starts: asyncio.Queue[float] = asyncio.Queue()
        qm = QueueManager(_queries(consumer_conn))

        async def noop(job: Any) -> None:
            starts.put_nowait(time.perf_counter())

        qm.entrypoint(ENTRYPOINT)(noop)

        run = asyncio.create_task(qm.run(batch_size=10, dequeue_timeout=timedelta(seconds=5)))
        producer = _queries(producer_conn)
        latencies: list[float] = []
        try:
            await asyncio.sleep(0.5)  # let the consumer reach its idle wait
            for _ in range(count):
                before = time.perf_counter()
                await producer.enqueue(ENTRYPOINT, PAYLOAD)
                started = await asyncio.wait_for(starts.get(), 5.0)
                latencies.append((started - before) * 1000.0)
                await asyncio.sleep(gap)  # back to idle
        finally:
            qm.shutdown.set()
            await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 15.0)
            await consumer_conn.close()
            await producer_conn.close()
        return percentile(latencies, 50), percentile(latencies, 99)

    return run_asyncio(main(), use_uvloop=settings.uvloop)
