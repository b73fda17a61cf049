"""`open_harness`: run your handlers in-process in your tests, on PostgreSQL or a fake.

Theory of operation
-------------------
The harness runs the real consumer (the same supervision tree, actors and settle rules as
`open_consumer`) with the handlers under test, and gives the test three things: `enqueue`,
`drain` (wait until no task of the handled types is pending or running) and `tasks` (the rows,
with status, attempts, messages and payload).  The same test runs against either table:

* a `Pool` or DSN: PostgreSQL, through `open_consumer`, `Producer` and `Client`; time is real
  time, so give retries short delays (``retry_policy=ConstantRetryPolicy(0.1)``);
* a `FakeDatabase`: the consumer's tree runs on it (`_consumer._open.run_consumer`, without
  maintenance, which needs PostgreSQL); time is the event loop's, so under Trio's
  ``autojump_clock`` retry back-off, snoozes, delays and timeouts take no real time.  On the
  fake a sync handler is called on the event loop's thread, not in a worker thread: a thread
  runs in real time while the autojump clock jumps whenever the loop is idle, so a timeout
  could pass while the thread was still starting.

`drain` looks at the table again and again; nothing announces that it is empty.  On the fake it
sleeps straight to the next due task when nothing is running or due (a one-hour retry delay is
one jump of the autojump clock) and otherwise a short tick; on PostgreSQL it polls every tick.
On the fake the consumer's own polls are rare (`FAKE_DEFAULTS`: each wake-up of an idle
consumer is a turn of the loop in virtual time), so when `drain` finds a task due but not
claimed (a retry or a snooze the consumer wrote itself, which no NOTIFY announces) it wakes
the fetcher with the fake's wake-up notification, as a producer's NOTIFY would: such a task
is claimed when it is due.

Waits on: the consumer's tree (as `open_consumer`) and `drain`'s sleeps.  Cancellation: see
each method.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .._api._client import Client
from .._api._producer import Producer
from .._consumer._open import Consumer, open_consumer, run_consumer
from .._consumer._threads import call_sync
from .._consumer._tree import Parts
from .._core._config import Handler, build_config
from .._core._enqueue import check_default_max_retry
from .._core._errors import ConfigurationError
from .._core._policies import DefaultRetryPolicy
from .._core._row import TaskStatus
from .._pg._pool import Pool, owned_pool
from .._telemetry._telemetry import Telemetry
from ._fake import FakeDatabase
from ._tables import EnqueuedTask, FakeTable, PgTable, Table

if TYPE_CHECKING:
    from .._core._config import HandlerFn, SyncHandlerFn
    from .._core._task import Task, TaskInfo

__all__ = ["FAKE_DEFAULTS", "HARNESS_DEFAULTS", "Harness", "open_harness"]

#: `open_consumer` options the harness sets unless the test does: quick wake-ups and writes,
#: a short shutdown grace, no maintenance.
HARNESS_DEFAULTS: Final[Mapping[str, Any]] = {
    "poll_interval": 0.1,
    "batch_interval": 0.0,
    "shutdown_timeout": 1.0,
    "maintenance": False,
}
#: What the harness sets on a `FakeDatabase` besides: the fake notifies every enqueue, re-queue
#: and cancel, so the fallback polls can be rare, and under an autojump clock every wake-up of
#: an idle consumer costs a turn of the loop (a one-day delay would be 864,000 polls of 0.1 s;
#: the lease keeper still wakes every ``lease_duration / 3``, so a virtual day costs about a
#: second).
#: The watchdog is moot in virtual time, and a sync handler called on the loop's thread would
#: only make it warn.
FAKE_DEFAULTS: Final[Mapping[str, Any]] = {
    "poll_interval": 60.0,
    "cancel_check_interval": 60.0,
    "queue_metrics_interval": 3600.0,
    "stall_threshold": 3600.0,
}
#: `open_consumer` options that are not `build_config`'s.
_NOT_CONFIG: Final = frozenset(
    {
        "handlers",
        "middleware",
        "retry_policy",
        "error_handler",
        "maintenance",
        "meter_provider",
        "tracer_provider",
        "consumer_id",
    }
)


@final
class Harness:
    """The handlers under test, running in-process: made by `open_harness`.

    Example::

        async with open_harness(FakeDatabase(), handlers=handlers) as harness:
            await harness.enqueue(Task("email.send", b'{"to": "ann@example.com"}'))
            await harness.drain()
            [task] = await harness.tasks("email.send")
            assert task.status is TaskStatus.COMPLETED
    """

    def __init__(self, table: Table, consumer: Consumer, types: tuple[str, ...]) -> None:
        self._table = table
        self._consumer = consumer
        self._types = types
        self._running = True

    @property
    def consumer(self) -> Consumer:
        """The consumer running the handlers (its `Consumer.statistics`, say)."""
        return self._consumer

    async def enqueue(self, task: Task) -> int:
        """Enqueue one task, as `Producer.enqueue` does; return its id.

        Raises:
            InvalidTask: the task failed validation.
            DuplicateTask: a task with the same type holds its idempotency token or its
                unique key.

        Cancellation: a checkpoint; on PostgreSQL, the task was inserted or not.
        """
        return await self._table.enqueue(task)

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[int | None]:
        """Enqueue a batch, as `Producer.enqueue_many` does: one entry per task, the new id
        or None for a skipped duplicate.

        Raises:
            InvalidTask: a task failed validation; nothing was enqueued.

        Cancellation: a checkpoint; the whole batch was enqueued or none of it.
        """
        return await self._table.enqueue_many(tasks)

    async def drain(self) -> None:
        """Wait until no task of the handled types is pending or running: every one is
        completed, failed or cancelled, retries and snoozes included (on the fake, under an
        autojump clock, in virtual time).

        Tasks of types without a handler here are left alone, and so is the rest of the
        table.  A task that can never run (in a queue the consumer does not serve, or
        paused) keeps it waiting: bound it with ``fail_after``, which takes no real time
        under an autojump clock.

        Raises:
            RuntimeError: the harness's block has ended (nothing runs the tasks).

        Cancellation: a checkpoint; nothing changes if cancelled.
        """
        if not self._running:
            raise RuntimeError("drain() after the harness's block ended: nothing runs tasks")
        while True:
            wait = await self._table.next_look(self._types)
            if wait is None:
                return
            await anyio.sleep(wait)

    async def tasks(
        self, task_type: str | None = None, *, status: TaskStatus | str | None = None
    ) -> list[EnqueuedTask]:
        """The tasks of the table in id order: all, or those of ``task_type``, or those with
        ``status``.

        Cancellation: a checkpoint; reads only.
        """
        wanted = None if status is None else TaskStatus(status)
        return await self._table.rows(None if task_type is None else [task_type], wanted)

    def _close(self) -> None:
        self._running = False


@asynccontextmanager
async def open_harness(
    database: FakeDatabase | Pool | str,
    *,
    handlers: Mapping[str, Handler | HandlerFn | SyncHandlerFn],
    default_max_retry: int = 3,
    **options: Any,
) -> AsyncIterator[Harness]:
    """Run ``handlers`` in-process while the block runs, on PostgreSQL or a fake.

    Example (pytest with pytest-trio; ``autojump_clock`` makes the retry delays virtual)::

        from asynqpg_trio import Task, TaskStatus
        from asynqpg_trio.testing import FakeDatabase, open_harness

        from myapp.tasks import handlers

        async def test_a_bad_address_fails_for_good(autojump_clock):
            async with open_harness(FakeDatabase(), handlers=handlers) as harness:
                await harness.enqueue(Task("email.send", b'{"to": "nobody"}'))
                await harness.drain()
            [task] = await harness.tasks("email.send")
            assert task.status is TaskStatus.FAILED
            assert task.messages[-1].startswith("SkipRetry: invalid address")

    Args:
        database: a `FakeDatabase`; or an `open_pool` pool or a DSN of a PostgreSQL database
            with the schema applied (`migrate`), used as it is (the harness deletes nothing).
        handlers: task type -> `Handler` or function, as for `open_consumer`.  On the fake a
            plain (sync) function is called on the event loop's thread (see the module
            docstring); on PostgreSQL it runs in a worker thread, as in production.
        default_max_retry: ``max_retry`` of tasks enqueued without one (as for `Producer`).
        options: any other `open_consumer` option; `HARNESS_DEFAULTS` (and on the fake
            `FAKE_DEFAULTS`) apply unless given.  On the fake, ``maintenance`` must stay
            False (it needs PostgreSQL).

    Raises:
        ConfigurationError: an option is invalid (as for `open_consumer`).
        TypeError: an option `open_consumer` does not take.

    Cancellation: as `open_consumer`: entering is a checkpoint; leaving shuts the consumer
    down gracefully (handlers still running get ``shutdown_timeout``, 1 s by default).
    """
    known = inspect.signature(open_consumer).parameters
    unknown = sorted(set(options) - set(known) - {"pool_or_dsn"})
    if unknown or "pool_or_dsn" in options:
        raise TypeError(f"open_harness() got options open_consumer does not take: {unknown}")
    check_default_max_retry(default_max_retry)
    types = tuple(handlers)
    if isinstance(database, FakeDatabase):
        settings = {**HARNESS_DEFAULTS, **FAKE_DEFAULTS, **options}
        parts = _parts_on_fake(database, handlers, settings, known)
        table: Table = FakeTable(database, default_max_retry)
        async with run_consumer(parts) as consumer:
            harness = Harness(table, consumer, types)
            try:
                yield harness
            finally:
                harness._close()
        return
    settings = {**HARNESS_DEFAULTS, **options}
    async with owned_pool(database, max_size=8) as pool:
        table = PgTable(Producer(pool, default_max_retry=default_max_retry), Client(pool))
        async with open_consumer(pool, handlers=handlers, **settings) as consumer:
            harness = Harness(table, consumer, types)
            try:
                yield harness
            finally:
                harness._close()


def _parts_on_fake(
    db: FakeDatabase,
    handlers: Mapping[str, Handler | HandlerFn | SyncHandlerFn],
    settings: dict[str, Any],
    known: Mapping[str, inspect.Parameter],
) -> Parts:
    """The consumer's parts on the fake: `open_consumer`'s defaults and checks, no pool."""
    if settings["maintenance"] not in (False, None):
        raise ConfigurationError("maintenance needs PostgreSQL: a FakeDatabase has none")
    raw = {name: p.default for name, p in known.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    raw.update(settings)
    inline = {
        t: _inline(t, h if isinstance(h, Handler) else Handler(h)) for t, h in handlers.items()
    }
    config = build_config(
        inline,
        raw["middleware"],
        consumer_id=raw["consumer_id"] or f"harness-{uuid.uuid4()}",
        **{k: v for k, v in raw.items() if k not in _NOT_CONFIG},
    )
    policy = raw["retry_policy"]
    return Parts(
        config=config,
        pool=None,
        tasks=db,
        policy=policy if policy is not None else DefaultRetryPolicy(),
        error_handler=raw["error_handler"],
        telemetry=Telemetry(raw["meter_provider"], raw["tracer_provider"]),
        maintenance=None,
    )


def _inline(task_type: str, handler: Handler) -> Handler:
    """``handler``, with a sync function called on the event loop's thread (on the fake)."""
    if not handler.is_sync:
        return handler
    fn = handler.fn

    async def call_inline(task: TaskInfo) -> Any:
        await anyio.lowlevel.checkpoint()
        return call_sync(fn, task, task_type)

    return replace(handler, fn=call_inline, threads=None)
