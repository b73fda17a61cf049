"""procrastinate (psycopg connector) under the harness's three measurements.

Theory of operation
-------------------
The schema is procrastinate's own (``schema_manager.apply_schema_async``).  *Enqueue* is
``Task.batch_defer_async`` in chunks, several chunks in flight over the connector's pool.
*Burn-down* runs ``processes`` children, each one worker (``App.run_worker_async``) with
``concurrency`` jobs in flight and a pool of ``pool_size`` connections; procrastinate fetches
one job per query.  A job is done when its row leaves ``todo``/``doing``.  *Latency* runs one
worker and the producer in the same process and loop, with LISTEN/NOTIFY on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .common import IDLE_GAP, ConsumerGroup, counting_remaining, percentile, run_asyncio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .common import Signals

__all__ = ["Settings", "burn_down", "enqueue_batch", "idle_latency", "setup", "version"]

TASK_NAME = "noop"


@dataclass(frozen=True)
class Settings:
    """procrastinate knobs the harness turns."""

    # Best of a sweep on the 2-core reference machine (see README).
    processes: int = 4
    concurrency: int = 20  # jobs in flight per worker
    pool_size: int = 4  # connections per worker process
    delete_jobs: str = "never"
    enqueue_chunk: int = 5000
    enqueue_in_flight: int = 2
    uvloop: bool = True

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict, for printing and JSON."""
        return asdict(self)


def version() -> str | None:
    """procrastinate's version, or None when it is not installed."""
    try:
        return metadata.version("procrastinate")
    except metadata.PackageNotFoundError:
        return None


def _app(dsn: str, pool_size: int, handler: Callable[[], Awaitable[None]]) -> tuple[Any, Any]:
    """A procrastinate App with one no-op task that calls ``handler``; (app, task)."""
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=pool_size, max_size=pool_size))

    async def noop() -> None:
        await handler()

    return app, app.task(name=TASK_NAME)(noop)


async def _nothing() -> None:
    return None


def setup(dsn: str) -> None:
    """Apply procrastinate's schema to the (fresh) database."""

    async def main() -> None:
        app, _ = _app(dsn, 1, _nothing)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(main())


def enqueue_batch(dsn: str, n: int, settings: Settings) -> float:
    """Jobs/s deferring N no-op jobs with ``batch_defer_async`` in chunks."""

    async def main() -> float:
        app, task = _app(dsn, settings.enqueue_in_flight, _nothing)
        chunk = settings.enqueue_chunk
        sizes = [min(chunk, n - start) for start in range(0, n, chunk)]
        async with app.open_async():
            started = time.perf_counter()

            async def producer(index: int) -> None:
                for size in sizes[index :: settings.enqueue_in_flight]:
                    await task.batch_defer_async(*([{}] * size))

            await asyncio.wait_for(
                asyncio.gather(*(producer(i) for i in range(settings.enqueue_in_flight))), 300.0
            )
            return n / (time.perf_counter() - started)

    return run_asyncio(main(), use_uvloop=settings.uvloop)


def _consumer_child(signals: Signals, dsn: str, settings: Settings) -> None:
    try:
        run_asyncio(_consume(signals, dsn, settings), use_uvloop=settings.uvloop)
    except BaseException:
        signals.failed()
        raise


async def _consume(signals: Signals, dsn: str, settings: Settings) -> None:
    async def handler() -> None:
        signals.bump()

    app, _ = _app(dsn, settings.pool_size, handler)
    async with app.open_async():
        loop = asyncio.get_running_loop()
        signals.ready()
        await loop.run_in_executor(None, signals.go.wait, 600.0)
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=settings.concurrency,
                install_signal_handlers=False,
                delete_jobs=settings.delete_jobs,
                listen_notify=True,
                fetch_job_polling_interval=1.0,
            )
        )
        await loop.run_in_executor(None, signals.stop.wait, 600.0)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(worker, 15.0)


def burn_down(dsn: str, n: int, settings: Settings, timeout: float = 300.0) -> float:
    """Jobs/s processing N pending no-op jobs until none is ``todo`` or ``doing``."""
    remaining, close = counting_remaining(
        dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    )
    try:
        args = [(dsn, settings)] * settings.processes
        with ConsumerGroup(_consumer_child, args) as group:
            return n / group.run_to_empty(n, remaining, timeout)
    finally:
        close()


def idle_latency(
    dsn: str, count: int, settings: Settings, gap: float = IDLE_GAP
) -> tuple[float, float]:
    """(p50, p99) ms from just before ``defer_async`` to handler start, idle worker."""

    async def main() -> tuple[float, float]:
        starts: asyncio.Queue[float] = asyncio.Queue()

        async def handler() -> None:
            starts.put_nowait(time.perf_counter())

        app, task = _app(dsn, settings.pool_size, handler)
        latencies: list[float] = []
        async with app.open_async():
            worker = asyncio.create_task(
                app.run_worker_async(
                    concurrency=settings.concurrency,
                    install_signal_handlers=False,
                    delete_jobs=settings.delete_jobs,
                    listen_notify=True,
                )
            )
            try:
                await asyncio.sleep(0.5)  # let the worker reach its idle wait
                for _ in range(count):
                    before = time.perf_counter()
                    await task.defer_async()
                    started = await asyncio.wait_for(starts.get(), 5.0)
                    latencies.append((started - before) * 1000.0)
                    await asyncio.sleep(gap)  # back to idle
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(worker, 15.0)
        return percentile(latencies, 50), percentile(latencies, 99)

    return run_asyncio(main(), use_uvloop=settings.uvloop)
