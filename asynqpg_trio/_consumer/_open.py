"""`open_consumer`: a supervised tree of actors that processes tasks.

Theory of operation
-------------------
`open_consumer` builds the tree's parts (`_tree.Parts`: settings, the tasks repository, the
lease book, counters, the fetcher's wake-up, the stop flags); `run_consumer` starts
`_tree.serve_tree` in a task group of its own and yields the `Consumer` once LISTEN is in
effect (the testing harness runs it on parts of its own, on a fake repository).  Whatever ends the
``async with`` block (normally, an exception, a cancellation) sets ``ending``: the tree then
shuts down in its nesting order (stop claiming, let in-flight handlers finish, release the
rest, write every outcome, stop the services), shielded and bounded by ``shutdown_timeout +
flush_timeout`` (plus a little) even when a handler ignores cancellation, and the task
group's join waits for it.  An exception inside the tree is a bug and surfaces as
`ConsumerError` raised from the exception group.  Tasks still held at the end are left to
the janitor: counted (``abandoned``) and logged.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio.abc import TaskStatus

from .._core._config import (
    ConsumerStatistics,
    ErrorHandler,
    Handler,
    HandlerFn,
    Middleware,
    SyncHandlerFn,
    build_config,
)
from .._core._consumers import Registration
from .._core._errors import ConfigurationError, ConsumerError
from .._core._policies import DefaultRetryPolicy
from .._core._retry import RetryPolicy
from .._core._schedule import check_schedules
from .._core._schedule_spec import Schedule
from .._core._version import __version__
from .._maintenance._config import MaintenanceConfig
from .._pg._consumers_repo import PgRegistry
from .._pg._migrate import check_schema
from .._pg._pool import Pool, owned_pool
from .._pg._schedules_repo import PgSchedules
from .._pg._tasks_repo import PgTasks
from .._telemetry._telemetry import Telemetry
from ._scheduler import Scheduler
from ._tree import Parts, serve_tree

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["Consumer", "open_consumer", "run_consumer", "serve_consumer"]

logger = logging.getLogger("asynqpg_trio.consumer")


@final
class Consumer:
    """A running consumer, yielded by `open_consumer`.  Not constructed directly."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._control = parts.control

    @property
    def consumer_id(self) -> str:
        """This consumer's id (its lease owner and leader-election identity)."""
        return self._parts.config.consumer_id

    def statistics(self) -> ConsumerStatistics:
        """A frozen snapshot of the consumer's counters."""
        parts = self._parts
        return parts.counters.snapshot(
            in_flight=len(parts.book.leases), pending_writes=parts.completer.pending()
        )

    def stop(self) -> None:
        """Ask for a graceful shutdown; `wait_stopped` returns when it is asked for.

        Used by `serve_consumer` and the ``worker`` command (first signal).
        """
        self._control.stop()

    async def wait_stopped(self) -> None:
        """Wait until `stop` is called.

        Cancellation: a checkpoint; nothing changes if cancelled.
        """
        await self._control.requested.wait()

    def stop_now(self) -> None:
        """Cut a graceful shutdown short (a second signal): stop without waiting for
        handlers (even ones that ignore cancellation) or writes.  The tasks left behind are
        left to the janitor: their leases expire and they are rescued."""
        self._control.stop_now()


@asynccontextmanager
async def open_consumer(
    pool_or_dsn: Pool | str,
    *,
    handlers: Mapping[str, Handler | HandlerFn | SyncHandlerFn],
    middleware: Sequence[Middleware] = (),
    retry_policy: RetryPolicy | None = None,
    error_handler: ErrorHandler | None = None,
    consumer_id: str | None = None,
    poll_interval: float | timedelta = 1.0,
    prefetch: int | None = None,
    shutdown_timeout: float | timedelta = 30.0,
    flush_timeout: float | timedelta = 10.0,
    lease_duration: float | timedelta = 30.0,
    cancel_check_interval: float | timedelta = 1.0,
    batch_size: int = 1000,
    batch_interval: float | timedelta | None = None,
    max_backlog: int = 20_000,
    message_limit: int = 2048,
    maintenance: bool | MaintenanceConfig = True,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    queue_metrics_interval: float | timedelta = 5.0,
    stall_threshold: float | timedelta | None = None,
    queues: Mapping[str, int | None] | Sequence[str] | None = None,
    schedules: Sequence[Schedule] = (),
) -> AsyncIterator[Consumer]:
    """Process tasks while the block runs; shut down gracefully when it ends.

    Handlers decide a task's fate by how they end: returning completes it; `SkipRetry` fails
    it now; `TaskSnooze(s)` puts it back for s seconds without using an attempt;
    `TaskSnoozeWithError(s)` counts a failed attempt and retries after s seconds (fails when
    none is left); any other exception retries after ``retry_policy``'s delay, or fails the
    task when its attempts are used up (then ``error_handler`` is called).

    Args:
        pool_or_dsn: an `open_pool` pool (size it for about 4 connections plus your own use),
            or a DSN (the consumer opens and closes its own pool).
        handlers: task type -> `Handler` (or a bare function: 10 workers, 30 s timeout).
            An ``async def`` handler runs on the event loop, a plain ``def`` one in a worker
            thread (see `Handler`).  A handler running past its ``Handler.timeout`` (default
            30 s; None for no limit) is cancelled and the attempt counts as failed.
        middleware: global middleware, outermost first, around every type's own middleware.
        retry_policy: back-off after failed attempts (default `DefaultRetryPolicy`:
            attempt**4 seconds, +-10 % jitter, capped at 24 h).
        error_handler: ``async def(task, error)``, called after a task failed for good.
        consumer_id: identity for leases and leader election (default: random).
        poll_interval: seconds between claims when no NOTIFY arrives (default 1).
        prefetch: tasks claimed per type beyond its workers.  Default None: adaptive, as many
            as workers with no backlog or slow handlers, up to 500 (50 ms of the handlers'
            measured speed) while a backlog of fast tasks drains.
        shutdown_timeout: seconds in-flight handlers get to finish at shutdown (default 30).
        flush_timeout: seconds the final write of outcomes may take at shutdown (default 10).
        lease_duration: seconds a claim is leased for; renewed every third of it while the
            task is held, however long its handler runs (default 30).  The lease only says
            how soon a dead consumer's tasks are rescued; how long a task may run is its
            handler's timeout.
        cancel_check_interval: seconds between checks for remotely cancelled tasks, behind the
            NOTIFY that normally reports them at once (default 1).
        batch_size: most outcomes written per statement (default 1000).
        batch_interval: seconds an outcome may wait to be batched.  Default None: adaptive,
            about zero when idle, rising with the outcome rate to 0.05 s at 2,000 outcomes/s.
        max_backlog: outcomes held while the database is unreachable before handlers block.
        message_limit: longest error message stored per failed attempt (characters).
        maintenance: True (default) to take part in leader election and, when leader, run
            the janitor and the cleaner; False to disable; or a `MaintenanceConfig`.
        meter_provider: the OpenTelemetry meter provider (default: the global one).
        tracer_provider: the OpenTelemetry tracer provider (default: the global one).
        queue_metrics_interval: seconds the queue depth and lag gauges are cached (default 5).
        stall_threshold: seconds the event loop may run nothing else (a handler blocking it)
            before a warning names the handlers that may have done it (default: a quarter
            of ``lease_duration``).  A loop blocked for ``lease_duration`` loses its leases.
        queues: the queues this consumer serves: a list of names, or a dict of name -> cap
            (the most tasks of that queue it holds at once, whatever their type; None for no
            cap of its own).  Default: the queue ``"default"`` only, where tasks go when
            `Task.queue` is not set (and where every row a Go producer inserts lands).
            Paused queues (`Client.pause_queue`) are not claimed; cluster-wide limits
            (`Client.set_limit`) hold across every consumer.
        schedules: periodic tasks (`Schedule`) this consumer enqueues, names distinct.  Run
            them in as many consumers as you like: the database keeps one task per fire.

    Raises:
        ConfigurationError: a setting is invalid (before anything starts).
        SchemaMissing, SchemaTooNew: the database schema is not the one this package needs.
        ConsumerError: a failure inside the consumer itself tore it down.

    Cancellation: entering is a checkpoint and returns once LISTEN is in effect and the first
    claim can run.  Leaving always runs the graceful shutdown, shielded and bounded by
    ``shutdown_timeout + flush_timeout`` (plus a little), even when a handler ignores
    cancellation: such a handler is abandoned (it runs on, detached, until it ends).  No task
    is lost: each ends completed, failed, pending, or, when the shutdown was cut short (by
    `Consumer.stop_now`, by the bound, or by a database that could not take the last
    writes), running until its lease expires and the janitor rescues it.  How many were left
    so is logged and counted in `ConsumerStatistics.abandoned`.
    """
    config = build_config(
        dict(handlers),
        middleware,
        consumer_id=consumer_id or f"consumer-{uuid.uuid4()}",
        poll_interval=poll_interval,
        prefetch=prefetch,
        shutdown_timeout=shutdown_timeout,
        flush_timeout=flush_timeout,
        lease_duration=lease_duration,
        cancel_check_interval=cancel_check_interval,
        batch_size=batch_size,
        batch_interval=batch_interval,
        max_backlog=max_backlog,
        message_limit=message_limit,
        queue_metrics_interval=queue_metrics_interval,
        stall_threshold=stall_threshold,
        queues=queues,
    )
    maintenance_config = _maintenance_config(maintenance)
    periodic = check_schedules(schedules)
    async with owned_pool(pool_or_dsn, max_size=6) as pool:
        async with pool.connection() as conn:
            await check_schema(conn)
        parts = Parts(
            config=config,
            pool=pool,
            tasks=PgTasks(pool),
            policy=retry_policy if retry_policy is not None else DefaultRetryPolicy(),
            error_handler=error_handler,
            telemetry=Telemetry(meter_provider, tracer_provider),
            maintenance=maintenance_config,
            registry=PgRegistry(pool),
            registration=Registration(
                consumer_id=config.consumer_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                queues=dict(config.queues),
                handlers={t: h.workers for t, h in config.handlers.items()},
                heartbeat_every=config.lease_duration / 3,
            ),
        )
        if periodic:
            parts.scheduler = Scheduler(periodic, PgSchedules(pool), parts.telemetry)
        async with run_consumer(parts) as consumer:
            yield consumer


@asynccontextmanager
async def run_consumer(parts: Parts) -> AsyncIterator[Consumer]:
    """Run the tree of ``parts`` while the block runs, then shut it down: `open_consumer`'s
    body, on whatever tasks repository ``parts`` holds (`asynqpg_trio.testing` runs it on a
    `FakeDatabase`).

    Cancellation: as `open_consumer`.
    """
    consumer = Consumer(parts)
    body_error: BaseException | None = None
    try:
        try:
            async with anyio.create_task_group() as root:
                await root.start(serve_tree, parts)
                try:
                    yield consumer
                except BaseException as exc:  # re-raised below, outside the task group
                    body_error = exc
                finally:
                    parts.control.ending.set()  # the tree shuts down; the join waits for it
        except BaseExceptionGroup as group:
            raise ConsumerError(f"the consumer failed: {group!r}") from group
        report_left(parts)
        if body_error is not None:
            raise body_error
    finally:
        parts.wakeup.close()


def _maintenance_config(maintenance: object) -> MaintenanceConfig | None:
    if maintenance is False or maintenance is None:
        return None
    if maintenance is True:
        return MaintenanceConfig()
    if isinstance(maintenance, MaintenanceConfig):
        return maintenance
    raise ConfigurationError(
        f"maintenance must be True, False or a MaintenanceConfig, got {maintenance!r}"
    )


def report_left(parts: Parts) -> None:
    """Count (``abandoned``) and log the tasks whose lease the consumer still holds at its
    end: left to the janitor."""
    leases = parts.book.leases
    left = parts.counters.abandoned = len(leases)
    if not left:
        return
    stuck = sum(1 for lease in leases.values() if lease.scope is not None)
    logger.warning(
        "shutdown: %d task%s left to the janitor (%d still in a handler that ignored"
        " cancellation, %d outcomes not written): they stay running under this consumer's"
        " lease until it expires (lease_duration %g s), then they are rescued",
        left,
        "" if left == 1 else "s",
        stuck,
        parts.completer.pending(),
        parts.config.lease_duration,
    )


async def serve_consumer(
    pool_or_dsn: Pool | str,
    *,
    task_status: TaskStatus[Consumer] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run a consumer until cancelled or until `Consumer.stop` is called.

    For ``nursery.start(serve_consumer, dsn, handlers=...)``: the started value is the
    `Consumer`, reported once LISTEN is in effect.  Takes the same options as `open_consumer`.

    Cancellation: runs the graceful shutdown before returning (see `open_consumer`).
    """
    async with open_consumer(pool_or_dsn, **options) as consumer:
        task_status.started(consumer)
        await consumer.wait_stopped()
