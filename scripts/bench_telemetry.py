"""What OpenTelemetry costs the consumer: no provider vs the SDK with in-memory exporters.

Run: python scripts/bench_telemetry.py [DSN] [--tasks N] [--rounds R]

DSN (or $ASYNQPG_DSN) names a server's maintenance database; the benchmark creates a
throwaway database there and drops it afterwards.  Each round enqueues N tasks and times a
consumer (20 workers, no-op handler) draining them, once per configuration, alternating, so
both see the same server state; the median rate is reported.  A micro-benchmark then times
the telemetry calls a handler actor makes per task, without the database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg import conninfo, sql

import asynqpg_trio
from asynqpg_trio import Handler, Producer, Task, TaskInfo, open_consumer, open_pool
from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._book import Claimed
from asynqpg_trio._core._outcome import Decision
from asynqpg_trio._telemetry._telemetry import Telemetry


def sdk_providers() -> tuple[dict[str, Any], InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"meter_provider": meter_provider, "tracer_provider": tracer_provider}, exporter


async def drain(dsn: str, n: int, providers: dict[str, Any]) -> float:
    async def noop(task: TaskInfo) -> None:
        pass

    async with open_pool(dsn, max_size=10) as pool:
        async with pool.connection() as conn:
            await conn.execute("TRUNCATE asynqpg_tasks")
        await Producer(pool).enqueue_many([Task("bench", b"") for _ in range(n)])
        started = time.perf_counter()
        async with open_consumer(
            pool,
            handlers={"bench": Handler(noop, workers=20)},
            maintenance=False,
            batch_interval=0.005,
            **providers,
        ) as consumer:
            while consumer.statistics().completed < n:
                await trio.sleep(0.002)
            elapsed = time.perf_counter() - started
    return n / elapsed


def micro(telemetry: Telemetry, n: int) -> float:
    """Microseconds of telemetry work per task (span, in-flight, duration, processed)."""
    claimed = Claimed(
        id=1,
        type="bench",
        payload=b"",
        idempotency_token=None,
        attempts_left=2,
        attempts_elapsed=1,
        created_at=datetime.now(UTC),
        attempted_at=None,
        messages=(),
        lease_token=1,
        trace_context=None,
    )
    decision = Decision(Outcome(1, 1, OutcomeKind.COMPLETE), "completed", None)
    started = time.perf_counter()
    for _ in range(n):
        run = telemetry.task_run(claimed)
        with run:
            pass
        run.finish(decision, None, timed_out=False)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("ASYNQPG_DSN"))
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"asynqpg_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(args.dsn, dbname=name)
    try:
        trio.run(asynqpg_trio.migrate, dsn)
        rates: dict[str, list[float]] = {"no provider": [], "SDK, in-memory": []}
        trio.run(drain, dsn, args.tasks, {})  # warm-up
        for _ in range(args.rounds):
            rates["no provider"].append(trio.run(drain, dsn, args.tasks, {}))
            providers, exporter = sdk_providers()
            rates["SDK, in-memory"].append(trio.run(drain, dsn, args.tasks, providers))
            assert len(exporter.get_finished_spans()) == args.tasks
        print(f"consumer throughput, {args.tasks} no-op tasks, median of {args.rounds} rounds:")
        for label, values in rates.items():
            print(f"  {label:16} {statistics.median(values):8.0f} tasks/s  {values}")
        print("telemetry calls per task (no database):")
        print(f"  {'no provider':16} {micro(Telemetry(), 200_000):8.2f} us")
        sdk, _ = sdk_providers()
        print(f"  {'SDK, in-memory':16} {micro(Telemetry(**sdk), 50_000):8.2f} us")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
