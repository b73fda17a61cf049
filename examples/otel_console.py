"""OpenTelemetry to the console: the spans and metrics of a producer and a consumer.

Run: python examples/otel_console.py DSN   (or set ASYNQPG_DSN)

The providers are set globally, so `Producer` and `open_consumer` need no argument (pass
``meter_provider=`` / ``tracer_provider=`` to use others).  The request span, the enqueue span
and each attempt's ``asynqpg.process`` span share one trace id: the producer stores the trace
context on the task row and the consumer continues it.  Needs ``opentelemetry-sdk``.
"""

from __future__ import annotations

import os
import sys

import trio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import asynqpg_trio
from asynqpg_trio import Producer, SkipRetry, Task, TaskInfo, open_consumer, open_pool


async def resize(task: TaskInfo) -> None:
    if task.payload == b"broken.png":
        raise SkipRetry("not an image")
    # Spans made here are children of this attempt's asynqpg.process span.
    with trace.get_tracer("example").start_as_current_span("resize"):
        await trio.sleep(0.01)


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    tracer = trace.get_tracer("example")
    async with open_pool(dsn, max_size=8) as pool:
        with tracer.start_as_current_span("upload request"):
            await Producer(pool).enqueue_many(
                [Task("image.resize", name) for name in (b"a.png", b"b.png", b"broken.png")]
            )
        async with open_consumer(pool, handlers={"image.resize": resize}) as consumer:
            while sum(_finished(consumer)) < 3:
                await trio.sleep(0.05)
    print("processed:", dict(zip(("completed", "failed"), _finished(consumer), strict=True)))


def _finished(consumer: asynqpg_trio.Consumer) -> tuple[int, int]:
    stats = consumer.statistics()
    return stats.completed, stats.failed


if __name__ == "__main__":
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    try:
        trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
    finally:
        meter_provider.shutdown()  # exports the metrics once more
        tracer_provider.shutdown()
