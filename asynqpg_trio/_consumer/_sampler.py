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

from typing import TYPE_CHECKING

import anyio

from .._pg import _tasks_repo as repo

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["run_sampler"]


async def run_sampler(rt: Runtime) -> None:
    """Refresh the queue gauges' sample until cancelled."""
    types = list(rt.config.handlers)
    sampler = rt.telemetry.queue_sampler(types)
    if sampler is None:
        return
    with sampler:
        while True:
            if sampler.wanted():
                async with rt.pool.connection() as conn:
                    sampler.update(await repo.queue_depth(conn, types))
            await anyio.sleep(rt.config.queue_metrics_interval)
