"""`open_consumer`: a supervised tree of actors that processes tasks.

Theory of operation
-------------------
Inside one task group run: the listener (LISTEN connection), the lease keeper, the completer,
the queue sampler (OpenTelemetry gauges), the watchdog (event loop stalls), maintenance (leader
election, janitor, cleaner) when enabled, and the pipeline: the fetcher and, per task type,
``workers`` handler actors.  They talk through bounded memory channels: fetcher -> per-type
task channels -> handler actors -> outcome channel -> completer.  Transient database errors
restart the actor that met them, with back-off; any other exception inside the tree is a bug
and surfaces as `ConsumerError` raised from the exception group.

The pipeline (the fetcher and the handler actors) runs in a *detached* task (`_detached`): a
Trio system task, outside this tree, which a watcher inside the tree joins (re-raising its
failure), so that shutdown can stop waiting for it.

Shutdown, when the ``async with`` block ends (normally, by an exception or by cancellation), is
`_shutdown`'s: stop claiming, let in-flight handlers finish, release the rest, write every
outcome, then stop the services; bounded by ``shutdown_timeout + flush_timeout`` even when a
handler ignores cancellation (the detached pipeline is then abandoned and its tasks left to
the janitor).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio.abc import TaskStatus

from .._core._batching import Outcome
from .._core._book import Lease
from .._core._config import (
    ConsumerStatistics,
    ErrorHandler,
    Handler,
    HandlerFn,
    Middleware,
    build_config,
)
from .._core._errors import ConsumerError
from .._core._policies import DefaultRetryPolicy
from .._core._retry import RetryPolicy
from .._pg._errors import TRANSIENT
from .._pg._migrate import check_schema
from .._pg._pool import Pool, pool_for
from .._telemetry._telemetry import Telemetry
from ._completer import run_completer
from ._detached import Detached
from ._fetcher import run_fetcher
from ._handlers import build_chain, run_worker
from ._lease_keeper import run_lease_keeper
from ._listener import run_listener
from ._runtime import Runtime, supervise
from ._sampler import run_sampler
from ._shutdown import StopControl, Tree, report_left, shut_down
from ._watchdog import run_watchdog

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["Consumer", "open_consumer", "serve_consumer"]

logger = logging.getLogger("asynqpg_trio.consumer")


@final
class Consumer:
    """A running consumer, yielded by `open_consumer`.  Not constructed directly."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._control = StopControl()

    @property
    def consumer_id(self) -> str:
        """This consumer's id (its lease owner and leader-election identity)."""
        return self._rt.config.consumer_id

    def statistics(self) -> ConsumerStatistics:
        """A frozen snapshot of the consumer's counters."""
        c = self._rt.counts
        return ConsumerStatistics(
            claimed=c["claimed"],
            completed=c["completed"],
            failed=c["failed"],
            retried=c["retried"],
            snoozed=c["snoozed"],
            released=c["released"],
            cancelled=c["cancelled"],
            stale_acks=c["stale_acks"],
            leases_lost=c["leases_lost"],
            loop_stalls=c["loop_stalls"],
            lease_takeovers=c["lease_takeovers"],
            takeover_failures=c["takeover_failures"],
            in_flight=len(self._rt.book.leases),
            pending_writes=self._rt.pending_writes,
            actor_restarts=c["actor_restarts"],
            abandoned=c["abandoned"],
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
    handlers: Mapping[str, Handler | HandlerFn],
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
    batch_size: int = 500,
    batch_interval: float | timedelta = 0.02,
    max_backlog: int = 20_000,
    message_limit: int = 2048,
    maintenance: Any = True,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    queue_metrics_interval: float | timedelta = 5.0,
    stall_threshold: float | timedelta | None = None,
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
        handlers: task type -> `Handler` (or a bare async function: 10 workers, 30 s
            timeout).  A handler running past its ``Handler.timeout`` (default 30 s; None
            for no limit) is cancelled and the attempt counts as failed.
        middleware: global middleware, outermost first, around every type's own middleware.
        retry_policy: back-off after failed attempts (default `DefaultRetryPolicy`:
            attempt**4 seconds, +-10 % jitter, capped at 24 h).
        error_handler: ``async def(task, error)``, called after a task failed for good.
        consumer_id: identity for leases and leader election (default: random).
        poll_interval: seconds between claims when no NOTIFY arrives (default 1).
        prefetch: tasks claimed per type beyond its workers (default: as many as workers).
        shutdown_timeout: seconds in-flight handlers get to finish at shutdown (default 30).
        flush_timeout: seconds the final write of outcomes may take at shutdown (default 10).
        lease_duration: seconds a claim is leased for; renewed every third of it while the
            task is held, however long its handler runs (default 30).  The lease only says
            how soon a dead consumer's tasks are rescued; how long a task may run is its
            handler's timeout.
        cancel_check_interval: seconds between checks for remotely cancelled tasks, behind the
            NOTIFY that normally reports them at once (default 1).
        batch_size: most outcomes written per statement (default 500).
        batch_interval: seconds an outcome may wait to be batched (default 0.02).
        max_backlog: outcomes held while the database is unreachable before handlers block.
        message_limit: longest error message stored per failed attempt (characters).
        maintenance: True (default) to take part in leader election and, when leader, run
            the janitor and the cleaner; False to disable; or a `MaintenanceConfig`.
        meter_provider, tracer_provider: OpenTelemetry providers (default: the global ones).
        queue_metrics_interval: seconds the queue depth and lag gauges are cached (default 5).
        stall_threshold: seconds the event loop may run nothing else (a handler blocking it)
            before a warning names the handlers that may have done it (default: a quarter
            of ``lease_duration``).  A loop blocked for ``lease_duration`` loses its leases.

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
    )
    maintenance_config = _maintenance_config(maintenance)
    pool, owned = pool_for(pool_or_dsn, max_size=6)
    rt = Runtime(
        config=config,
        pool=pool,
        policy=retry_policy if retry_policy is not None else DefaultRetryPolicy(),
        error_handler=error_handler,
        telemetry=Telemetry(meter_provider, tracer_provider),
    )
    consumer = Consumer(rt)
    body_error: BaseException | None = None
    try:
        async with pool.connection() as conn:
            await check_schema(conn)
        try:
            async with anyio.create_task_group() as root:
                tree: Tree = await root.start(_run_tree, rt, maintenance_config)
                try:
                    yield consumer
                except BaseException as exc:  # re-raised below, outside the task group
                    body_error = exc
                finally:
                    await shut_down(rt, consumer._control, tree)
                    tree.scope.cancel()
        except BaseExceptionGroup as group:
            raise ConsumerError(f"the consumer failed: {group!r}") from group
        report_left(rt)
        if body_error is not None:
            raise body_error
    finally:
        rt.kick_send.close()
        rt.kick_receive.close()
        if owned:
            pool.close()


def _maintenance_config(maintenance: Any) -> Any:
    if maintenance is False or maintenance is None:
        return None
    from .._maintenance._config import MaintenanceConfig

    if maintenance is True:
        return MaintenanceConfig()
    if isinstance(maintenance, MaintenanceConfig):
        return maintenance
    from .._core._errors import ConfigurationError

    raise ConfigurationError(
        f"maintenance must be True, False or a MaintenanceConfig, got {maintenance!r}"
    )


async def _run_tree(
    rt: Runtime,
    maintenance_config: Any,
    *,
    task_status: TaskStatus[Tree] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Start every actor; report started once LISTEN is in effect.

    The tree runs shielded: cancelling the host does not reach the actors, so the graceful
    shutdown still has its completer and handlers; `open_consumer` ends the tree itself by
    cancelling its scope once shutdown is over.
    """
    config = rt.config
    outcome_send, outcome_receive = anyio.create_memory_object_stream[Outcome](config.batch_size)
    with anyio.CancelScope(shield=True) as tree_scope, _closed(outcome_send, outcome_receive):
        await _start_actors(
            rt, maintenance_config, outcome_send, outcome_receive, tree_scope, task_status
        )


@contextlib.contextmanager
def _closed(*streams: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for stream in streams:
            stream.close()


async def _start_actors(
    rt: Runtime,
    maintenance_config: Any,
    outcome_send: Any,
    outcome_receive: Any,
    tree_scope: anyio.CancelScope,
    task_status: TaskStatus[Tree],
) -> None:
    config = rt.config
    completer_done = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_listen_forever, rt)
        tg.start_soon(supervise, rt, "lease keeper", lambda: run_lease_keeper(rt))
        tg.start_soon(_complete, rt, outcome_receive, completer_done)
        tg.start_soon(supervise, rt, "queue sampler", lambda: run_sampler(rt))
        tg.start_soon(run_watchdog, rt)
        if maintenance_config is not None:
            from .._maintenance._run import run_maintenance

            tg.start_soon(
                lambda: run_maintenance(
                    rt.pool,
                    client_id=config.consumer_id,
                    config=maintenance_config,
                    retry_policy=rt.policy,
                )
            )
        fetcher_scope = anyio.CancelScope()
        pipeline = Detached(f"asynqpg-trio pipeline of {config.consumer_id}")
        pipeline.start(_run_pipeline, rt, fetcher_scope, outcome_send)
        tg.start_soon(pipeline.watch)
        task_status.started(Tree(tree_scope, fetcher_scope, pipeline, completer_done))


async def _listen_forever(
    rt: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    started = False

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    # The first connection must succeed (start-up fails otherwise); later losses restart.
    while True:
        try:
            await run_listener(rt, ready)
            return
        except TRANSIENT:
            if not started:
                raise
            break
    await supervise(rt, "listener", lambda: run_listener(rt, ready))


async def _complete(rt: Runtime, receive: Any, done: anyio.Event) -> None:
    await run_completer(rt, receive)
    done.set()  # every sender closed and every outcome written


async def _run_pipeline(rt: Runtime, scope: anyio.CancelScope, outcome_send: Any) -> None:
    """The fetcher and the handler actors; returns when all handler actors have exited."""
    config = rt.config
    chains = {
        task_type: build_chain(handler.fn, config.middleware + tuple(handler.middleware))
        for task_type, handler in config.handlers.items()
    }
    sends: dict[str, Any] = {}
    async with outcome_send, _closing(sends), anyio.create_task_group() as workers:
        for task_type, handler in config.handlers.items():
            send, receive = anyio.create_memory_object_stream[Lease](config.limit(task_type))
            sends[task_type] = send
            async with receive:
                for _ in range(handler.workers):
                    workers.start_soon(
                        run_worker,
                        rt,
                        handler,
                        chains[task_type],
                        receive.clone(),
                        outcome_send.clone(),
                    )
        with scope:
            try:
                await supervise(rt, "fetcher", lambda: run_fetcher(rt, sends))
            finally:
                for send in sends.values():
                    send.close()


@asynccontextmanager
async def _closing(sends: dict[str, Any]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for send in sends.values():
            send.close()


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
