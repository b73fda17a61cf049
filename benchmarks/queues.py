"""Named queues and priorities under load: the figures issue #18 asks for.

- *Burn-down, one queue*: as the ``ours`` step (same settings), for the ratio in the same run.
- *Burn-down, 10 queues*: the same N tasks spread round-robin over 10 queues with priorities
  cycling through -5..5; each consumer process serves all 10 queues.
- *Urgent latency*: `URGENT_BACKLOG` due priority-0 tasks, one consumer draining them; every
  `URGENT_GAP` seconds a priority-5 task is enqueued and the time from just before its enqueue
  to its handler's start is taken; the consumer runs in a process of its own (as in
  production, and as the ``ours`` idle latency) and sends its handler-start stamps back over a
  pipe.  Compare with the idle latency of the ``ours`` step: an urgent task waits for the
  consumer's next claim and for what its prefetch buffer already holds, not for the backlog;
  measured with the default (adaptive) prefetch and with ``prefetch=0``, both with no-op
  handlers (the consumer drains as fast as the machine lets it: every core busy), and with
  handlers that wait 10 ms (the consumer has CPU to spare, as one whose handlers do I/O).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from . import ours
from .common import (
    SPAWN,
    ConsumerGroup,
    analyze,
    counting_remaining,
    fresh_database,
    percentile,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .common import Signals

__all__ = ["QUEUES", "run"]

QUEUES = [f"q{i}" for i in range(10)]
#: The urgent-latency runs: (label, prefetch, seconds each backlog task waits, JSON key suffix).
#: With no-op handlers the consumer drains as fast as it can and the machine's cores are all
#: busy; with handlers that wait 10 ms (50 workers: at most 5,000 tasks/s) it is not.
URGENT_RUNS: tuple[tuple[str, int | None, float, str], ...] = (
    ("default prefetch", None, 0.0, ""),
    ("prefetch=0", 0, 0.0, "_prefetch0"),
    ("default prefetch, 10 ms handlers", None, 0.010, "_waiting"),
)
URGENT_BACKLOG = 100_000
URGENT_COUNT = 50
URGENT_GAP = 0.02


def _enqueue_spread(dsn: str, n: int) -> None:
    from asynqpg_trio import Producer, Task, open_pool

    async def main() -> None:
        async with open_pool(dsn, min_size=1, max_size=2) as pool:
            producer = Producer(pool)
            for start in range(0, n, ours.ENQUEUE_CHUNK):
                size = min(ours.ENQUEUE_CHUNK, n - start)
                await producer.enqueue_many(
                    [
                        Task(
                            ours.TASK_TYPE,
                            ours.PAYLOAD,
                            queue=QUEUES[i % len(QUEUES)],
                            priority=i % 11 - 5,
                        )
                        for i in range(start, start + size)
                    ]
                )

    trio.run(main)


def _child(signals: Signals, dsn: str) -> None:
    try:
        trio.run(_consume, signals, dsn)
    except BaseException:
        signals.failed()
        raise


async def _consume(signals: Signals, dsn: str) -> None:
    from asynqpg_trio import Handler

    async def noop(task: Any) -> None:
        signals.bump()

    await ours.serve_consumer(
        signals,
        dsn,
        {ours.TASK_TYPE: Handler(noop, workers=ours.WORKERS)},
        prefetch=ours.BURN_PREFETCH,
        batch_size=ours.BURN_BATCH,
        batch_interval=ours.BURN_INTERVAL,
        queues=QUEUES,
    )


def burn_down_queues(server: str, n: int) -> float:
    """Tasks/s burning N tasks spread over 10 queues with mixed priorities."""
    with fresh_database(server, "ours_queues") as dsn:
        ours.setup(dsn)
        _enqueue_spread(dsn, n)
        analyze(dsn)
        remaining, close = counting_remaining(
            dsn, "SELECT count(*) FROM asynqpg_tasks WHERE status IN ('pending', 'running')"
        )
        try:
            with ConsumerGroup(_child, [(dsn,)] * ours.PROCESSES) as group:
                return n / group.run_to_empty(n, remaining, 300.0)
        finally:
            close()


def burn_down_one_queue(server: str, n: int) -> float:
    """Tasks/s of the ``ours`` burn-down (one queue, default priority), for the ratio."""
    with fresh_database(server, "ours_onequeue") as dsn:
        ours.setup(dsn)
        ours.enqueue_batch(dsn, n)
        analyze(dsn)
        return ours.burn_down(dsn, n)


def _urgent_child(
    signals: Signals, dsn: str, prefetch: int | None, work: float, stamps: Connection
) -> None:
    try:
        trio.run(_urgent_consume, signals, dsn, prefetch, work, stamps)
    except BaseException:
        signals.failed()
        raise


async def _urgent_consume(
    signals: Signals, dsn: str, prefetch: int | None, work: float, stamps: Connection
) -> None:
    from asynqpg_trio import Handler

    async def handle(task: Any) -> None:
        if task.priority == 5:
            stamps.send(time.perf_counter())
        elif work:
            await trio.sleep(work)  # waiting on I/O, as most handlers do

    await ours.serve_consumer(
        signals, dsn, {ours.TASK_TYPE: Handler(handle, workers=50)}, prefetch=prefetch
    )


def urgent_latency(
    server: str, prefetch: int | None = None, work: float = 0.0
) -> tuple[float, float]:
    """(p50, p99) ms from enqueue to start of priority-5 tasks behind a due backlog, with the
    default (adaptive) prefetch or a fixed one, the backlog's handlers returning at once or
    after ``work`` seconds of waiting.  The consumer runs in a process of its own and sends its
    handler-start stamps back over a pipe, as in the ``ours`` idle latency."""
    from asynqpg_trio import Producer, Task, open_pool

    with fresh_database(server, "ours_urgent") as dsn:
        ours.setup(dsn)
        ours.enqueue_batch(dsn, URGENT_BACKLOG)
        analyze(dsn)
        receive_stamps, send_stamps = SPAWN.Pipe(duplex=False)

        async def main(group: ConsumerGroup) -> tuple[float, float]:
            latencies: list[float] = []
            async with open_pool(dsn, min_size=1, max_size=1) as pool:
                producer = Producer(pool)
                group.signals.go.set()
                await trio.sleep(0.5)  # the consumer is busy with the backlog by now
                for _ in range(URGENT_COUNT):
                    before = time.perf_counter()
                    await producer.enqueue(Task(ours.TASK_TYPE, ours.PAYLOAD, priority=5))
                    with trio.fail_after(10):
                        await trio.lowlevel.wait_readable(receive_stamps.fileno())
                    latencies.append((receive_stamps.recv() - before) * 1000.0)
                    await trio.sleep(URGENT_GAP)
            return percentile(latencies, 50), percentile(latencies, 99)

        with ConsumerGroup(_urgent_child, [(dsn, prefetch, work, send_stamps)]) as group:
            group.wait_ready()
            return trio.run(main, group)


def run(server: str, n: int, log: Any) -> dict[str, Any]:
    """Every figure of this step, logged as it comes."""
    out: dict[str, Any] = {"n": n, "queues": len(QUEUES), "urgent_backlog": URGENT_BACKLOG}
    out["one_queue_per_s"] = burn_down_one_queue(server, n)
    log(f"queues: burn-down, one queue {out['one_queue_per_s']:,.0f} tasks/s")
    out["ten_queues_per_s"] = burn_down_queues(server, n)
    out["ten_over_one"] = out["ten_queues_per_s"] / out["one_queue_per_s"]
    log(
        f"queues: burn-down, 10 queues, mixed priorities {out['ten_queues_per_s']:,.0f} tasks/s"
        f" ({out['ten_over_one']:.2f}x one queue)"
    )
    for label, prefetch, work, key in URGENT_RUNS:
        p50, p99 = urgent_latency(server, prefetch, work)
        out[f"urgent{key}_p50_ms"], out[f"urgent{key}_p99_ms"] = p50, p99
        log(
            f"queues: priority-5 task behind {URGENT_BACKLOG:,} due ones ({label}):"
            f" p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    return out
