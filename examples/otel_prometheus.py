"""Serve the queue's metrics to Prometheus while a producer and a consumer run.

Run: python examples/otel_prometheus.py DSN [--port 9464] [--seconds N]

Prometheus then scrapes http://HOST:9464/metrics; ``docs/grafana-asynqpg.json`` is a Grafana
dashboard for these names (``asynqpg_tasks_processed_total``, ``asynqpg_queue_depth``, ...).
With ``--seconds`` it stops after that long and prints its own ``asynqpg_*`` series.  Needs
``opentelemetry-sdk`` and ``opentelemetry-exporter-prometheus``.
"""

from __future__ import annotations

import argparse
import os
import random
import urllib.request

import trio
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

import asynqpg_trio
from asynqpg_trio import Handler, Producer, Task, TaskInfo, TaskSnooze, open_consumer, open_pool

SNOOZED: set[int] = set()


async def charge(task: TaskInfo) -> None:
    await trio.sleep(random.uniform(0.005, 0.05))
    if task.payload == b"flaky" and task.attempts_elapsed == 0:
        raise ConnectionError("payment gateway timed out")  # retried, then succeeds
    if task.payload == b"later" and task.id not in SNOOZED:
        SNOOZED.add(task.id)
        raise TaskSnooze(1)  # back in a second; not an error


async def produce(producer: Producer) -> None:
    payloads = [b"ok"] * 8 + [b"flaky", b"later"]
    while True:
        await producer.enqueue_many([Task("payment.charge", p) for p in payloads])
        await trio.sleep(0.2)


async def main(dsn: str, port: int, seconds: float | None) -> None:
    await asynqpg_trio.migrate(dsn)
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    server, _ = start_http_server(port, addr="127.0.0.1")
    port = server.server_port
    print(f"serving metrics on http://127.0.0.1:{port}/metrics")
    async with open_pool(dsn, max_size=8) as pool:
        producer = Producer(pool, meter_provider=meter_provider)
        async with (
            open_consumer(
                pool,
                handlers={"payment.charge": Handler(charge, workers=4)},
                meter_provider=meter_provider,
                queue_metrics_interval=0.5,
            ),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(produce, producer)
            if seconds is None:
                await trio.sleep_forever()
            await trio.sleep(seconds)
            text = await trio.to_thread.run_sync(_scrape, port)
            nursery.cancel_scope.cancel()
        print("\n".join(line for line in text.splitlines() if line.startswith("asynqpg_")))
    server.shutdown()
    meter_provider.shutdown()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("ASYNQPG_DSN"))
    parser.add_argument("--port", type=int, default=9464, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args()
    trio.run(main, args.dsn, args.port, args.seconds)
