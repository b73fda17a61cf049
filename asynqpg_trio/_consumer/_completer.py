"""The completer: writes handler outcomes in batches, fenced by lease token.

Theory of operation
-------------------
Outcomes arrive on a bounded channel.  The pure `CompletionBatch` decides when to flush (size
or age; with the default ``batch_interval=None`` the age follows the outcome rate, measured
here: about zero when idle, up to 50 ms when draining, see `_core._adaptive`) and cuts plans
of at most ``batch_size``; each plan is written by one autocommit statement, every kind of
outcome at once, each row matching id, status running and lease token.
Ids the database did not update are stale acknowledgements (the lease changed meanwhile): each
is counted and logged as a warning with the task.  After a plan is written its leases leave the
lease book.

A transient database error puts the plan back (nothing is dropped) and the completer retries
with back-off while it keeps accepting outcomes, up to ``max_backlog``; past that it stops
receiving, so handlers block and the fetcher stops claiming.

Pending writes are derived, never counted by hand: the outcomes in the channel (buffered, or
a handler waiting to send) plus those the completer holds (its batch, and the plan being
written); `Completer.pending` reads them.

Shutdown: the completer runs until every sender has closed its end of the channel, then
flushes what is left.  The consumer bounds that final flush with ``flush_timeout``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Protocol

import anyio

from .._core._adaptive import RateMeter, flush_delay
from .._core._batching import CompletionBatch, FlushPlan, Outcome, OutcomeKind
from .._pg._errors import TRANSIENT

if TYPE_CHECKING:
    from collections.abc import Iterable

    from anyio.streams.memory import MemoryObjectReceiveStream

    from .._core._rows import TasksRepository

__all__ = ["Completer"]

logger = logging.getLogger("asynqpg_trio.completer")


class CompleterSettings(Protocol):
    """The completer's settings (`ConsumerConfig` is one)."""

    @property
    def batch_size(self) -> int: ...
    @property
    def batch_interval(self) -> float | None: ...
    @property
    def max_backlog(self) -> int: ...
    @property
    def lease_duration(self) -> float: ...


class CompleterBook(Protocol):
    """What the completer uses of the lease book."""

    def forget(self, task_id: int, token: int) -> None:
        """Drop the lease of a task whose outcome was written (if it is still that token's)."""

    def type_of(self, task_id: int) -> str:
        """The task type of a leased task (for the stale-acknowledgement metric)."""


class CompleterCounters(Protocol):
    """What the completer counts."""

    completed: int
    failed: int
    retried: int
    snoozed: int
    released: int
    stale_acks: int
    actor_restarts: int


class FlushTelemetry(Protocol):
    """The metrics of a written plan."""

    def flushed(self, size: int, seconds: float, stale_types: Iterable[str]) -> None:
        """Record one written plan: its size, how long it took, the types of stale acks."""


class Completer:
    """The completer of one consumer: `run` writes outcomes; `pending` counts the unwritten."""

    settings: CompleterSettings
    tasks: TasksRepository
    book: CompleterBook
    counters: CompleterCounters
    telemetry: FlushTelemetry

    def __init__(
        self,
        settings: CompleterSettings,
        tasks: TasksRepository,
        book: CompleterBook,
        counters: CompleterCounters,
        telemetry: FlushTelemetry,
    ) -> None:
        self.settings, self.tasks, self.book = settings, tasks, book
        self.counters, self.telemetry = counters, telemetry
        interval = settings.batch_interval
        #: None: the flush delay adapts to the outcome rate (`_core._adaptive.flush_delay`).
        self._meter = RateMeter() if interval is None else None
        self._batch = CompletionBatch(
            max_size=settings.batch_size, max_age=0.0 if interval is None else interval
        )
        self._receive: MemoryObjectReceiveStream[Outcome] | None = None
        self._writing = 0  # outcomes of the plan being written

    def pending(self) -> int:
        """Outcomes decided and not written yet: in the channel, batched, or being written."""
        held = len(self._batch) + self._writing
        if self._receive is None:
            return held
        stats = self._receive.statistics()
        return held + stats.current_buffer_used + stats.tasks_waiting_send

    async def run(self, receive: MemoryObjectReceiveStream[Outcome]) -> None:
        """Receive and write outcomes until the channel is closed and everything is written.

        Cancellation: a checkpoint; outcomes not written yet stay unwritten (their leases
        expire and the janitor rescues their tasks).
        """
        self._receive = receive
        batch, max_backlog, meter = self._batch, self.settings.max_backlog, self._meter
        open_ = True
        delay = 0.05
        async with receive:
            while open_ or len(batch):
                now = anyio.current_time()
                if open_ and len(batch) < max_backlog and not batch.should_flush(now):
                    deadline = batch.deadline()
                    held = len(batch)
                    with anyio.move_on_at(math.inf if deadline is None else deadline):
                        try:
                            batch.add(await receive.receive(), anyio.current_time())
                        except anyio.EndOfStream:
                            open_ = False
                    # Take whatever else is already waiting, without yielding.
                    now = anyio.current_time()
                    while open_ and len(batch) < max_backlog:
                        try:
                            batch.add(receive.receive_nowait(), now)
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            open_ = False
                    if meter is not None:  # the adaptive flush delay follows the rate
                        # Only what arrived counts (a wait that timed out brought nothing).
                        meter.add(len(batch) - held, now)
                        batch.max_age = flush_delay(meter.rate(now))
                    if open_ and not batch.should_flush(anyio.current_time()):
                        continue
                if not len(batch):
                    continue
                plan = batch.take()
                self._writing = len(plan.outcomes)
                try:
                    await self._flush(plan)
                    delay = 0.05
                except TRANSIENT as exc:
                    batch.requeue(plan)
                    self.counters.actor_restarts += 1
                    logger.warning("completer: write failed, retrying in %.2f s: %s", delay, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                finally:
                    self._writing = 0

    async def _flush(self, plan: FlushPlan) -> None:
        started = time.perf_counter()
        written = await self.tasks.write_outcomes(plan)
        seconds = time.perf_counter() - started
        stale: list[str] = []
        book = self.book
        tally = dict.fromkeys(OutcomeKind, 0)
        for outcome in plan.outcomes:
            if outcome.task_id in written:
                tally[outcome.kind] += 1
            else:
                task_type = book.type_of(outcome.task_id)
                stale.append(task_type)
                logger.warning(
                    "outcome of task %d (%r) is stale, not written: its lease changed before"
                    " the write (the task was cancelled, or taken over or rescued after the"
                    " lease expired, or deleted)",
                    outcome.task_id,
                    task_type,
                )
            book.forget(outcome.task_id, outcome.lease_token)
        counters = self.counters
        counters.completed += tally[OutcomeKind.COMPLETE]
        counters.failed += tally[OutcomeKind.FAIL]
        counters.retried += tally[OutcomeKind.RETRY]
        counters.snoozed += tally[OutcomeKind.SNOOZE]
        counters.released += tally[OutcomeKind.RELEASE]
        counters.stale_acks += len(stale)
        self._writing = 0
        self.telemetry.flushed(len(plan.outcomes), seconds, stale)
