"""The completer: writes handler outcomes in batches, fenced by lease token.

Theory of operation
-------------------
Outcomes arrive on a bounded channel.  The pure `CompletionBatch` decides when to flush (size
or age) and cuts plans of at most ``batch_size``; each plan is written in one transaction with
one statement per outcome kind, every statement matching id, status running and lease token.
Ids the database did not update are stale acknowledgements (the lease changed meanwhile): each
is counted and logged as a warning with the task.  After a plan is written its leases leave the
lease book.

A transient database error puts the plan back (nothing is dropped) and the completer retries
with back-off while it keeps accepting outcomes, up to ``max_backlog``; past that it stops
receiving, so handlers block and the fetcher stops claiming.

Shutdown: the completer runs until every sender has closed its end of the channel, then
flushes what is left.  The consumer bounds that final flush with ``flush_timeout``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import anyio

from .._core._batching import CompletionBatch, FlushPlan, Outcome, OutcomeKind
from .._pg import _tasks_repo as repo
from .._pg._errors import TRANSIENT

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ._runtime import Runtime

__all__ = ["run_completer"]

logger = logging.getLogger("asynqpg_trio.completer")

_COUNTER = {
    OutcomeKind.COMPLETE: "completed",
    OutcomeKind.FAIL: "failed",
    OutcomeKind.RETRY: "retried",
    OutcomeKind.SNOOZE: "snoozed",
    OutcomeKind.RELEASE: "released",
}


async def run_completer(rt: Runtime, receive: MemoryObjectReceiveStream[Outcome]) -> None:
    """Receive and write outcomes until the channel is closed and everything is written."""
    batch = CompletionBatch(max_size=rt.config.batch_size, max_age=rt.config.batch_interval)
    open_ = True
    delay = 0.05
    async with receive:
        while open_ or len(batch):
            now = anyio.current_time()
            if open_ and len(batch) < rt.config.max_backlog and not batch.should_flush(now):
                deadline = batch.deadline()
                with anyio.move_on_at(math.inf if deadline is None else deadline):
                    try:
                        batch.add(await receive.receive(), anyio.current_time())
                    except anyio.EndOfStream:
                        open_ = False
                # Take whatever else is already waiting, without yielding.
                now = anyio.current_time()
                while open_ and len(batch) < rt.config.max_backlog:
                    try:
                        batch.add(receive.receive_nowait(), now)
                    except anyio.WouldBlock:
                        break
                    except anyio.EndOfStream:
                        open_ = False
                if open_ and not batch.should_flush(anyio.current_time()):
                    continue
            if not len(batch):
                continue
            plan = batch.take()
            try:
                await _flush(rt, plan)
                delay = 0.05
            except TRANSIENT as exc:
                batch.requeue(plan)
                rt.counts["actor_restarts"] += 1
                logger.warning("completer: write failed, retrying in %.2f s: %s", delay, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)


async def _flush(rt: Runtime, plan: FlushPlan) -> None:
    started = time.perf_counter()
    async with rt.pool.connection() as conn:
        written = await repo.write_outcomes(conn, plan, idle_timeout=rt.config.lease_duration / 2)
    seconds = time.perf_counter() - started
    stale: list[str] = []
    book, counts = rt.book, rt.counts
    for outcome in plan.outcomes:
        if outcome.task_id in written:
            counts[_COUNTER[outcome.kind]] += 1
        else:
            counts["stale_acks"] += 1
            task_type = book.type_of(outcome.task_id)
            stale.append(task_type)
            logger.warning(
                "outcome of task %d (%r) is stale, not written: its lease changed before the"
                " write (the task was cancelled, or taken over or rescued after the lease"
                " expired, or deleted)",
                outcome.task_id,
                task_type,
            )
        book.forget(outcome.task_id, outcome.lease_token)
    rt.pending_writes -= len(plan.outcomes)
    rt.telemetry.flushed(len(plan.outcomes), seconds, stale)
