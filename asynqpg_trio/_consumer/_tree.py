"""The consumer's supervision tree, in one function: `serve_tree`.

Theory of operation
-------------------
The nesting of `serve_tree`'s ``async with`` blocks is the start order, and their unwinding
the shutdown order:

* *services*, outermost, start first and stop last: the listener (the tree reports started
  once its LISTEN is in effect; it claims on a NOTIFY through the fetcher's `Claimer` while
  the work runs), the progress writer, the lease keeper (which also keeps
  the consumer's registry row), the queue sampler, the watchdog, maintenance when enabled,
  and the scheduler when the consumer has schedules.  Leases are renewed and remote cancels
  heard until every outcome is written.
* *completing*: the completer, which returns once every sender of the outcome channel has
  closed its end and everything is written (the final flush).
* *the work*, innermost: the fetcher and, per task type, ``workers`` handler actors
  (`serve_work`), talking through bounded channels: fetcher -> per-type lease channels ->
  handler actors -> outcome channel -> completer.  It runs *detached* (`_detached`: a Trio
  system task outside this tree, joined by a watcher inside it, which re-raises its failure),
  so that shutdown stays bounded when a handler shields itself from cancellation.

Shutdown begins when the consumer's ``async with`` block ends (`StopControl.ending`):

1. stop claiming: the fetcher is cancelled and closes the lease channels (a claim already
   sent still comes back, and its tasks are released with the buffered ones); handler actors
   release (back to pending, no attempt used) every task they receive from now on;
2. in-flight handlers get ``shutdown_timeout`` seconds to finish (the work's end, an event);
3. handlers still running are cancelled and their tasks released too;
4. the completer writes every outcome: within ``flush_timeout`` the work must end (the
   cancelled handlers with it) and the completer drain (the join of *completing*);
5. the services stop; maintenance resigns leadership.

The tree runs shielded (a cancelled host still shuts down gracefully) and, once shutdown
begins, bounded: ``shutdown_timeout + flush_timeout + MARGIN``.  `Consumer.stop_now` cancels
it at once.  Leaving the work's block abandons whatever of the detached work still runs: it
is cancelled and ends whenever its last shielded handler does (its outcomes are dropped), and
every task whose lease the consumer still holds is *left to the janitor*: its row stays
``running`` until the lease, no longer renewed, expires, and it is rescued (or taken over by a
claim), an attempt used.  Nothing is lost; ``open_consumer`` counts (``abandoned``) and logs
them.  Any exception inside the tree other than a transient database error (which restarts
the actor that met it) is a bug: it tears the tree down.

Waits on: the end of the block (an event), the work's end (an event) and the nursery joins;
never a polled flag.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._core._batching import Outcome
from .._core._book import LeaseBook
from .._maintenance._run import run_maintenance
from .._pg._maintenance_repo import PgMaintenance
from ._buffer import LeaseSender, open_lease_buffer
from ._completer import Completer
from ._detached import Detached
from ._fetcher import URGENT_ROOM, Claimer, run_fetcher
from ._handlers import HandlerSettings, build_chain, run_worker
from ._lease_keeper import run_lease_keeper
from ._listener import serve_listener
from ._progress_writer import ConsumerProgress, run_progress_writer
from ._sampler import run_sampler
from ._scheduler import Scheduler
from ._shared import Counters, StopControl, Stopping, Wakeup, supervise
from ._threads import runnable
from ._watchdog import run_watchdog

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from .._core._config import ConsumerConfig, ErrorHandler
    from .._core._consumers import Registration, RegistryRepository
    from .._core._retry import RetryPolicy
    from .._core._rows import TasksRepository
    from .._maintenance._config import MaintenanceConfig
    from .._pg._pool import Pool
    from .._telemetry._telemetry import Telemetry

__all__ = ["MARGIN", "Parts", "serve_tree"]

#: Seconds the shutdown may take beyond ``shutdown_timeout + flush_timeout``.
MARGIN = 5.0


@dataclass(eq=False)
class Parts:
    """What one consumer's tree is made of (built by `open_consumer` before it starts)."""

    config: ConsumerConfig
    #: None: no PostgreSQL behind ``tasks`` (the testing harness on a fake), no maintenance.
    pool: Pool | None
    tasks: TasksRepository
    policy: RetryPolicy
    error_handler: ErrorHandler | None
    telemetry: Telemetry
    maintenance: MaintenanceConfig | None
    book: LeaseBook = field(default_factory=LeaseBook)
    counters: Counters = field(default_factory=Counters)
    wakeup: Wakeup = field(default_factory=Wakeup)
    stopping: Stopping = field(default_factory=Stopping)
    control: StopControl = field(default_factory=StopControl)
    completer: Completer = field(init=False)
    claimer: Claimer = field(init=False)
    scheduler: Scheduler | None = None
    #: The handlers' progress sink (made when the tree starts, inside the event loop).
    progress: ConsumerProgress | None = None
    #: The consumer registry and what this consumer registers (None: not registered, as
    #: the testing harness on a fake).
    registry: RegistryRepository | None = None
    registration: Registration | None = None

    def __post_init__(self) -> None:
        self.completer = Completer(
            self.config, self.tasks, self.book, self.counters, self.telemetry
        )
        self.claimer = Claimer(self.config, self.book, self.wakeup, self.counters, self.telemetry)


async def serve_tree(
    p: Parts, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run the consumer's actors; started once LISTEN is in effect; shut down (see the module
    docstring) once ``p.control.ending`` is set.

    Cancellation: shielded (the host's cancellation never reaches the actors); `stop_now`
    cancels the tree.
    """
    config, control, book, counters = p.config, p.control, p.book, p.counters
    p.progress = ConsumerProgress(book.leases)
    with anyio.CancelScope(shield=True) as control.tree_scope:
        async with anyio.create_task_group() as services:  # 5. stop last
            await services.start(serve_listener, p.tasks, p.wakeup, book, counters, p.claimer)
            services.start_soon(run_progress_writer, p.progress, p.tasks)
            services.start_soon(
                supervise,
                counters,
                "lease keeper",
                functools.partial(
                    run_lease_keeper,
                    config,
                    p.tasks,
                    book,
                    counters,
                    p.telemetry,
                    p.registry,
                    p.registration,
                ),
            )
            services.start_soon(
                supervise,
                counters,
                "queue sampler",
                functools.partial(
                    run_sampler,
                    p.tasks,
                    p.telemetry,
                    list(config.handlers),
                    config.queue_metrics_interval,
                    list(config.queues),
                ),
            )
            services.start_soon(run_watchdog, config.stall_threshold, book, counters, p.telemetry)
            if p.maintenance is not None and p.pool is not None:
                services.start_soon(
                    functools.partial(
                        run_maintenance,
                        PgMaintenance(p.pool),
                        client_id=config.consumer_id,
                        config=p.maintenance,
                        retry_policy=p.policy,
                    )
                )
            if p.scheduler is not None:
                services.start_soon(supervise, counters, "scheduler", p.scheduler.run)
            outcome_tx, outcome_rx = anyio.create_memory_object_stream[Outcome](config.batch_size)
            # The work's handle: leaving this block abandons whatever of it still runs.
            with Detached(f"asynqpg-trio work of {config.consumer_id}") as work:
                async with anyio.create_task_group() as completing:  # 4. the final flush
                    completing.start_soon(p.completer.run, outcome_rx)
                    with outcome_tx:
                        # 1-3. The work, innermost: detached, so that a handler shielding
                        # itself from cancellation cannot hold the shutdown past its bound.
                        claiming = anyio.CancelScope()
                        work.start(serve_work, p, claiming, outcome_tx.clone())
                        completing.start_soon(work.watch)  # its failure tears the tree down
                        task_status.started()
                        await control.ending.wait()
                        control.tree_scope.deadline = (
                            anyio.current_time()
                            + config.shutdown_timeout
                            + config.flush_timeout
                            + MARGIN
                        )
                        if control.now:  # stop_now came before the shutdown began
                            control.tree_scope.cancel()
                        p.stopping.stopping = True  # 1. stop claiming
                        claiming.cancel()
                        with anyio.move_on_after(config.shutdown_timeout):
                            await work.done.wait()  # 2. in-flight handlers finish
                        book.release_running()  # 3. cancel the rest; they release their tasks
                    completing.cancel_scope.deadline = anyio.current_time() + config.flush_timeout
            services.cancel_scope.cancel()  # 5.


async def serve_work(
    p: Parts, claiming: anyio.CancelScope, outcomes: MemoryObjectSendStream[Outcome]
) -> None:
    """The work: the fetcher (under ``claiming``) and the handler actors; returns once every
    handler actor has exited (the fetcher's end closes their channels)."""
    config = p.config
    sends: dict[str, LeaseSender] = {}
    async with outcomes, anyio.create_task_group() as work:
        try:
            for task_type, handler in config.handlers.items():
                # Inside the tree: a middleware factory's bug surfaces as ConsumerError.
                # A sync handler runs in threads, behind an async function of its own.
                fn = runnable(task_type, handler)
                chain = build_chain(fn, config.middleware + tuple(handler.middleware))
                settings = HandlerSettings(
                    chain,
                    handler.timeout,
                    p.policy,
                    p.error_handler,
                    config.message_limit,
                    handler.result_limit,
                    p.progress,
                )
                # Most urgent first, across claims (`_buffer`).
                send, receive = open_lease_buffer(config.limit(task_type) + URGENT_ROOM)
                sends[task_type] = send
                with receive:
                    for _ in range(handler.workers):
                        work.start_soon(
                            run_worker,
                            settings,
                            p.book,
                            p.wakeup,
                            p.stopping,
                            p.counters,
                            p.telemetry,
                            receive.clone(),
                            outcomes.clone(),
                        )
            p.claimer.open(sends)  # the listener may claim from now on
            with claiming:
                await supervise(
                    p.counters,
                    "fetcher",
                    functools.partial(run_fetcher, config, p.tasks, p.claimer),
                )
        finally:
            # No claim from now on (one in flight is dispatched first), then no more work
            # comes: the handler actors drain and exit.
            await p.claimer.close()
            for send in sends.values():
                send.close()
