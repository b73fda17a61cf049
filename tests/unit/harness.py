"""What the actor unit tests build: settings, the shared objects, and a running pipeline.

Every test runs under Trio's ``autojump_clock`` on a `FakeDatabase` whose clock is the event
loop's, so a lease, a poll interval or a handler timeout of tens of seconds passes at once.
The actors are the real functions, each given the narrow objects `serve_tree` gives it.
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import trio

from asynqpg_trio import Handler
from asynqpg_trio._consumer._completer import Completer
from asynqpg_trio._consumer._fetcher import Claimer, run_fetcher
from asynqpg_trio._consumer._handlers import HandlerSettings, run_worker
from asynqpg_trio._consumer._lease_keeper import run_lease_keeper
from asynqpg_trio._consumer._shared import Counters, Stopping, Wakeup
from asynqpg_trio._consumer._threads import runnable
from asynqpg_trio._core._batching import Outcome
from asynqpg_trio._core._book import Lease, LeaseBook
from asynqpg_trio._core._config import ConsumerConfig
from asynqpg_trio._core._policies import ConstantRetryPolicy
from asynqpg_trio._telemetry._telemetry import Telemetry
from asynqpg_trio.testing import FakeDatabase

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.streams.memory import MemoryObjectSendStream

    from asynqpg_trio import TaskInfo
    from asynqpg_trio._core._retry import RetryPolicy

TYPE = "t"


async def do_nothing(task: TaskInfo) -> None:
    """A handler that completes every task at once."""


def config(handler: Handler | None = None, **settings: Any) -> ConsumerConfig:
    """A consumer's settings for one task type, `TYPE`, with ``settings`` overriding."""
    base = ConsumerConfig(
        handlers={TYPE: handler or Handler(do_nothing, workers=2)},
        middleware=(),
        consumer_id="unit",
        poll_interval=5.0,
        prefetch=0,
        shutdown_timeout=5.0,
        flush_timeout=5.0,
        lease_duration=30.0,
        cancel_check_interval=60.0,
        batch_size=10,
        batch_interval=0.5,
        max_backlog=100,
        message_limit=1024,
    )
    return replace(base, **settings)


@dataclass(eq=False)
class Shared:
    """The objects the tree shares between its actors."""

    db: FakeDatabase = field(default_factory=FakeDatabase)
    book: LeaseBook = field(default_factory=LeaseBook)
    wakeup: Wakeup = field(default_factory=Wakeup)
    counters: Counters = field(default_factory=Counters)
    stopping: Stopping = field(default_factory=Stopping)
    telemetry: Telemetry = field(default_factory=Telemetry)


@asynccontextmanager
async def pipeline(
    shared: Shared, cfg: ConsumerConfig, policy: RetryPolicy | None = None
) -> AsyncIterator[None]:
    """Fetcher -> handler actors -> completer on ``shared.db``, as `serve_work` wires them, and
    the lease keeper (without it a lease expires and the fetcher takes its task over);
    cancelled when the block ends."""
    s = shared
    handler = cfg.handlers[TYPE]
    settings = HandlerSettings(
        runnable(TYPE, handler),  # a sync handler runs in threads, as in serve_work
        handler.timeout,
        policy or ConstantRetryPolicy(1.0),
        None,
        cfg.message_limit,
    )
    completer = Completer(cfg, s.db, s.book, s.counters, s.telemetry)
    async with trio.open_nursery() as nursery:
        send, receive = anyio.create_memory_object_stream[Lease](cfg.limit(TYPE))
        outcome_tx, outcome_rx = anyio.create_memory_object_stream[Outcome](cfg.batch_size)
        nursery.start_soon(completer.run, outcome_rx)
        with receive, outcome_tx:
            for _ in range(handler.workers):
                nursery.start_soon(
                    functools.partial(
                        run_worker,
                        settings,
                        s.book,
                        s.wakeup,
                        s.stopping,
                        s.counters,
                        s.telemetry,
                        receive.clone(),
                        outcome_tx.clone(),
                    )
                )
        nursery.start_soon(run_lease_keeper, cfg, s.db, s.book, s.counters, s.telemetry)
        nursery.start_soon(run_fetcher, cfg, s.db, claimer(s, cfg, {TYPE: send}))
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
            send.close()


def claimer(
    s: Shared, cfg: ConsumerConfig, sends: dict[str, MemoryObjectSendStream[Lease]]
) -> Claimer:
    """The fetcher's claimer over ``s``, open on ``sends``."""
    c = Claimer(cfg, s.book, s.wakeup, s.counters, s.telemetry)
    c.open(sends)
    return c
