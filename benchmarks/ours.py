"""asynqpg-trio under the harness's measurements, plus its scaling and memory probes.

Theory of operation
-------------------
Written against the public API (``Producer``, ``Task``, ``open_pool``, ``open_consumer``,
``Handler``).  Until that API exists the import fails, `AVAILABLE` is False, and the harness
prints "ours: not available yet" instead of calling anything here.

- *Enqueue*: ``Producer.enqueue_many`` in chunks of `ENQUEUE_CHUNK`, `ENQUEUE_IN_FLIGHT`
  chunks in flight over one pool.
- *Burn-down*: ``processes`` children, each one ``open_consumer`` with ``Handler(noop,
  workers=WORKERS)`` and the tuned batch settings; done when no row is ``pending`` or
  ``running``.  *Burn-down, defaults*: the same in a fresh database, but with what a user
  gets without tuning: ``Handler(noop)`` and ``open_consumer``'s defaults.
- *Latency*: the consumer (defaults) in a child process, the producer in this one, as in
  production; the handler stamps ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for
  every process of the machine) and sends the stamp back over a pipe.
- *Scaling*: burn-down with 1, 2 and 4 consumer processes, each in a fresh database.
- *Memory*: one consumer process over a backlog loaded with COPY; VmRSS sampled from
  /proc/<pid>/status when it is ready (idle, nothing claimed yet) and while it drains for a
  bounded window.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from . import ceiling
from .common import (
    IDLE_GAP,
    SPAWN,
    BenchError,
    ConsumerGroup,
    analyze,
    counting_remaining,
    fresh_database,
    percentile,
    read_rss_kib,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .common import Signals

try:
    from asynqpg_trio import (  # type: ignore[attr-defined,unused-ignore]
        Handler,
        Producer,
        Task,
        open_consumer,
        open_pool,
    )
except ImportError as ex:
    AVAILABLE = False
    UNAVAILABLE_REASON = f"{type(ex).__name__}: {ex}"
else:
    AVAILABLE = True
    UNAVAILABLE_REASON = ""

__all__ = [
    "AVAILABLE",
    "UNAVAILABLE_REASON",
    "burn_down",
    "burn_down_defaults",
    "consumer_rss",
    "enqueue_batch",
    "idle_latency",
    "serve_consumer",
    "settings",
    "setup",
    "throughput_scaling",
]

TASK_TYPE = "noop"
PAYLOAD = b"{}"
#: Handler workers per consumer process.
WORKERS = 50
#: Tasks per ``enqueue_many`` call, and how many calls are in flight at once.
ENQUEUE_CHUNK = 5000
#: Burn-down consumer settings: claim and complete in large batches (no-op handlers).
BURN_PREFETCH = 450
BURN_BATCH = 1000
#: Burn-down: seconds an outcome may wait for its batch (the default is 0.02).
BURN_INTERVAL = 0.05
ENQUEUE_IN_FLIGHT = 2
#: Default consumer processes for the burn-down.
PROCESSES = 2
_UNFINISHED = "SELECT count(*) FROM asynqpg_tasks WHERE status IN ('pending', 'running')"


def settings() -> dict[str, Any]:
    """The knobs used, for printing and JSON."""
    return {
        "processes": PROCESSES,
        "workers": WORKERS,
        "prefetch": BURN_PREFETCH,
        "batch_size": BURN_BATCH,
        "batch_interval": BURN_INTERVAL,
        "enqueue_chunk": ENQUEUE_CHUNK,
        "enqueue_in_flight": ENQUEUE_IN_FLIGHT,
    }


def setup(dsn: str) -> None:
    """Apply our migrations to the (fresh) database."""
    ceiling.migrate(dsn)


def enqueue_batch(dsn: str, n: int) -> float:
    """Tasks/s enqueueing N no-op tasks with ``Producer.enqueue_many``."""

    async def main() -> float:
        sizes = [min(ENQUEUE_CHUNK, n - start) for start in range(0, n, ENQUEUE_CHUNK)]
        async with open_pool(dsn, min_size=ENQUEUE_IN_FLIGHT, max_size=ENQUEUE_IN_FLIGHT) as pool:
            producer = Producer(pool)
            started = time.perf_counter()

            async def produce(index: int) -> None:
                for size in sizes[index::ENQUEUE_IN_FLIGHT]:
                    await producer.enqueue_many([Task(TASK_TYPE, PAYLOAD) for _ in range(size)])

            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    for index in range(ENQUEUE_IN_FLIGHT):
                        nursery.start_soon(produce, index)
            return n / (time.perf_counter() - started)

    return trio.run(main)


def single_enqueue(server_dsn: str, count: int) -> float:
    """Tasks/s enqueueing one task per ``Producer.enqueue`` call (a commit each), fresh database."""
    with fresh_database(server_dsn, "ours_single") as dsn:
        setup(dsn)

        async def main() -> float:
            async with open_pool(dsn, min_size=1, max_size=1) as pool:
                producer = Producer(pool)
                started = time.perf_counter()
                for _ in range(count):
                    await producer.enqueue(Task(TASK_TYPE, PAYLOAD))
                return count / (time.perf_counter() - started)

        return trio.run(main)


def _consumer_child(
    signals: Signals, dsn: str, workers: int, task_type: str, tuned: bool = True
) -> None:
    try:
        trio.run(_consume, signals, dsn, workers, task_type, tuned)
    except BaseException:
        signals.failed()
        raise


async def serve_consumer(
    signals: Signals, dsn: str, handlers: dict[str, Handler], **options: Any
) -> None:
    """A consumer child's work: open a pool, report ready, wait for ``go``, then run
    ``open_consumer(pool, handlers=handlers, **options)`` until ``stop``."""
    async with open_pool(dsn) as pool:
        signals.ready()
        await trio.to_thread.run_sync(signals.go.wait, 600.0)
        if signals.stop.is_set():
            return
        async with open_consumer(pool, handlers=handlers, **options):
            await trio.to_thread.run_sync(signals.stop.wait, 600.0)


async def _consume(signals: Signals, dsn: str, workers: int, task_type: str, tuned: bool) -> None:
    async def noop(task: Any) -> None:
        signals.bump()

    if tuned:
        await serve_consumer(
            signals,
            dsn,
            {task_type: Handler(noop, workers=workers)},
            prefetch=BURN_PREFETCH,
            batch_size=BURN_BATCH,
            batch_interval=BURN_INTERVAL,
        )
    else:  # what a user gets without tuning
        await serve_consumer(signals, dsn, {task_type: Handler(noop)})


def burn_down(
    dsn: str, n: int, processes: int = PROCESSES, timeout: float = 300.0, *, tuned: bool = True
) -> float:
    """Tasks/s processing N pending no-op tasks to an empty queue (``tuned``: the benchmark's
    settings; else ``Handler(noop)`` and ``open_consumer``'s defaults)."""
    remaining, close = counting_remaining(dsn, _UNFINISHED)
    try:
        args = [(dsn, WORKERS, TASK_TYPE, tuned)] * processes
        with ConsumerGroup(_consumer_child, args) as group:
            return n / group.run_to_empty(n, remaining, timeout)
    finally:
        close()


def burn_down_defaults(server_dsn: str, n: int) -> float:
    """Burn-down with the default settings, in a fresh database of its own (so it meets the
    same table as the tuned one: N fresh rows, ANALYZEd)."""
    with fresh_database(server_dsn, "ours_defaults") as dsn:
        setup(dsn)
        enqueue_batch(dsn, n)
        analyze(dsn)
        return burn_down(dsn, n, tuned=False)


def _latency_child(signals: Signals, dsn: str, stamps: Connection) -> None:
    try:
        trio.run(_latency_consume, signals, dsn, stamps)
    except BaseException:
        signals.failed()
        raise


async def _latency_consume(signals: Signals, dsn: str, stamps: Connection) -> None:
    async def noop(task: Any) -> None:
        stamps.send(time.perf_counter())

    async with open_pool(dsn) as pool, open_consumer(pool, handlers={TASK_TYPE: Handler(noop)}):
        signals.ready()
        await trio.to_thread.run_sync(signals.stop.wait, 600.0)


def idle_latency(dsn: str, count: int, gap: float = IDLE_GAP) -> tuple[float, float]:
    """(p50, p99) ms from just before ``enqueue_many`` to handler start, idle consumer (the
    defaults) in another process."""
    receive_stamps, send_stamps = SPAWN.Pipe(duplex=False)

    async def main() -> tuple[float, float]:
        latencies: list[float] = []
        async with open_pool(dsn, min_size=1, max_size=1) as pool:
            producer = Producer(pool)
            await trio.sleep(0.5)  # let the consumer reach its idle wait
            for _ in range(count):
                before = time.perf_counter()
                await producer.enqueue_many([Task(TASK_TYPE, PAYLOAD)])
                if not await trio.to_thread.run_sync(receive_stamps.poll, 5.0):
                    raise BenchError("idle latency: no handler start within 5 s")
                latencies.append((receive_stamps.recv() - before) * 1000.0)
                await trio.sleep(gap)  # back to idle
        return percentile(latencies, 50), percentile(latencies, 99)

    with ConsumerGroup(_latency_child, [(dsn, send_stamps)]) as group:
        group.wait_ready()
        return trio.run(main)


def throughput_scaling(
    server_dsn: str, n: int, processes: tuple[int, ...] = (1, 2, 4)
) -> dict[int, float]:
    """Burn-down tasks/s with 1, 2 and 4 consumer processes, each in a fresh database."""
    out: dict[int, float] = {}
    for count in processes:
        with fresh_database(server_dsn, f"ours_scale{count}") as dsn:
            setup(dsn)
            enqueue_batch(dsn, n)
            analyze(dsn)
            out[count] = burn_down(dsn, n, count)
    return out


def consumer_rss(
    server_dsn: str, backlogs: tuple[int, ...] = (1_000, 1_000_000), window: float = 5.0
) -> dict[int, dict[str, int | None]]:
    """VmRSS (KiB) of one consumer process over each backlog: ready, and peak while draining.

    The backlog is loaded with COPY (the enqueue path is not what is measured).  ``ready_kib``
    is taken after the pool is open and before the consumer starts; ``idle_kib`` after
    ``window`` seconds of a consumer whose handler type matches nothing (so it idles over the
    backlog); ``peak_kib`` is the largest sample (every 50 ms) during ``window`` seconds of
    draining.
    """
    out: dict[int, dict[str, int | None]] = {}
    for backlog in backlogs:
        with fresh_database(server_dsn, "ours_rss") as dsn:
            setup(dsn)
            ceiling.insert_copy(dsn, backlog)
            analyze(dsn)
            idle = _sample_rss(dsn, "no-such-type", window)
            drain = _sample_rss(dsn, TASK_TYPE, window)
            out[backlog] = {
                "ready_kib": drain["ready_kib"],
                "idle_kib": idle["peak_kib"],
                "peak_kib": drain["peak_kib"],
                "handled": drain["handled"],
            }
    return out


def _sample_rss(dsn: str, task_type: str, window: float) -> dict[str, int | None]:
    with ConsumerGroup(_consumer_child, [(dsn, WORKERS, task_type)]) as group:
        group.wait_ready()
        pid = group.pids[0]
        ready = read_rss_kib(pid)
        group.signals.go.set()
        peak = ready or 0
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            group.check_errors()
            peak = max(peak, read_rss_kib(pid) or 0)
            time.sleep(0.05)
        return {"ready_kib": ready, "peak_kib": peak, "handled": group.signals.counter.value}
