"""The queue sampler: reads queue depth and lag per type for the OpenTelemetry gauges.

Theory of operation
-------------------
The gauges ``asynqpg.queue.depth`` and ``asynqpg.queue.oldest_pending_age`` are observed by
synchronous callbacks, possibly on an exporter's thread, that must not query the database.
They read a cache (`QueueSampler`) which this actor refreshes with one read-only statement
every ``queue_metrics_interval`` seconds, on a pooled connection, for this consumer's types.
It queries only while the sample is wanted: the consumer was given a meter provider of its
own, or the gauges were read lately (a no-op provider never reads them, so then it only
sleeps).  With no metrics at all (a no-op meter provider) it returns at once.

Cancellation: stops between statements; the cache keeps its last sample, and leaving takes
this consumer's sample off the gauges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._core._rows import TasksRepository
    from .._telemetry._gauges import QueueSampler

__all__ = ["run_sampler"]


class SamplerTelemetry(Protocol):
    """Where the queue gauges' cache comes from."""

    def queue_sampler(self, types: Sequence[str]) -> QueueSampler | None: ...


async def run_sampler(
    tasks: TasksRepository,
    telemetry: SamplerTelemetry,
    types: Sequence[str],
    interval: float,
    queues: Sequence[str] = ("default",),
) -> None:
    """Refresh the queue gauges' sample every ``interval`` seconds until cancelled.

    Cancellation: a checkpoint; the gauges keep the last sample until the cache is left.
    """
    sampler = telemetry.queue_sampler(types)
    if sampler is None:
        return
    with sampler:
        while True:
            if sampler.wanted():
                sampler.update(await tasks.queue_depth(types, queues))
            await anyio.sleep(interval)
