"""The fetcher: claims ready tasks for every registered type in one round trip per cycle.

Theory of operation
-------------------
Each cycle asks, per type, for as many tasks as it has free capacity (its workers plus its
prefetch buffer, minus what it already holds), but only when at least half that capacity is
free or the type holds nothing: claims come in batches rather than one per finished task.
One ``claim`` statement serves all types (``FOR NO KEY UPDATE SKIP LOCKED``, oldest
``blocked_till`` first, id as tie-breaker).  Claimed tasks go into the type's bounded memory
channel, whose size is that capacity, so sending never blocks.

When a type got all it asked for, more may be waiting: it is marked backlogged, and a handler
finishing a task of that type wakes the fetcher.  When nothing was left, the fetcher sleeps
until a NOTIFY (from producers, through the listener), the poll interval, or the moment the
earliest delayed task becomes ready, whichever comes first.  It asks when that moment is only
when a cycle claimed nothing or the previous deadline has passed: after a claim that took
tasks the query would delay the handlers' start (the server competes for the CPU), and the
previous deadline still covers what was due.

Cancellation: the fetcher stops between statements.  A claim is not cancelled once sent (it
is shielded for up to `CLAIM_GRACE` seconds): a claim the server has committed leases its
tasks to this consumer, so its reply must reach the handler actors, which release the tasks
at once when the consumer is stopping.  Closing its send channels on exit tells the handler
actors no more work comes.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import anyio

from .._core._book import Lease
from .._core._rows import ClaimedTask
from .._core._task import TaskInfo
from .._pg import _tasks_repo as repo

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from ._runtime import Runtime

__all__ = ["plan_claim", "run_fetcher"]

logger = logging.getLogger("asynqpg_trio.fetcher")

#: The longest a claim may delay a stop (it is shielded from cancellation; see run_fetcher).
CLAIM_GRACE = 5.0
TAKEOVER_MESSAGE = "lease expired: the consumer running this attempt stopped renewing its lease"
EXHAUSTED_MESSAGE = TAKEOVER_MESSAGE + "; no attempt left"


def plan_claim(
    free: dict[str, int], busy: dict[str, int], limits: dict[str, int]
) -> dict[str, int]:
    """How many tasks of each type to ask for (pure): free capacity, in batches."""
    wanted: dict[str, int] = {}
    for task_type, n in free.items():
        if n <= 0:
            continue
        if busy.get(task_type, 0) == 0 or n >= max(1, limits[task_type] // 2):
            wanted[task_type] = n
    return wanted


async def run_fetcher(rt: Runtime, sends: dict[str, MemoryObjectSendStream[Lease]]) -> None:
    """Claim and dispatch until cancelled."""
    types = list(sends)
    limits = {t: rt.config.limit(t) for t in types}
    wake_at = -math.inf  # when to look again without a wake-up
    while True:
        await anyio.lowlevel.checkpoint()  # where a stop reaches the fetcher (see below)
        wanted = plan_claim({t: rt.free(t) for t in types}, rt.book.busy, limits)
        got: dict[str, int] = {}
        if wanted:
            rows: list[ClaimedTask] = []
            async with rt.pool.connection() as conn:
                # Shielded, bounded: once the server has committed a claim its tasks are
                # leased to us, so the reply must reach the book (a stopping consumer then
                # releases them at once).  Cancelled while the reply was on its way, the
                # claim would be lost and its tasks left running until their leases expired,
                # each an attempt poorer.
                with anyio.move_on_after(CLAIM_GRACE, shield=True):
                    rows = await repo.claim(
                        conn,
                        wanted,
                        owner=rt.config.consumer_id,
                        lease=rt.config.lease_duration,
                        takeover_message=TAKEOVER_MESSAGE,
                        exhausted_message=EXHAUSTED_MESSAGE,
                    )
            for row in rows:
                got[row.type] = got.get(row.type, 0) + 1
            _dispatch(rt, sends, rows)
        rt.backlogged = {t for t, n in wanted.items() if got.get(t, 0) >= n}
        if rt.backlogged and any(rt.free(t) > 0 for t in rt.backlogged):
            continue
        now = anyio.current_time()
        if rt.backlogged:
            wake_at = now + rt.config.poll_interval
        elif not got or wake_at <= now:
            # Idle, or the last deadline passed: ask when the next delayed task is due.  After
            # a claim that took tasks the previous deadline still holds (what was due before
            # it is known; anything newer is found by that poll), which keeps this query off
            # the path from a wake-up to the handlers starting.
            timeout = rt.config.poll_interval
            async with rt.pool.connection() as conn:
                ready_in = await repo.next_ready_in(conn, types)
            if ready_in is not None:
                timeout = min(timeout, max(ready_in, 0.001))
            wake_at = anyio.current_time() + timeout
        await rt.wait_kick(wake_at)


def _dispatch(
    rt: Runtime, sends: dict[str, MemoryObjectSendStream[Lease]], rows: list[ClaimedTask]
) -> None:
    """Put claimed rows in the lease book and on their types' channels (never blocks)."""
    add = rt.book.add
    claimed = 0
    for row in rows:
        task_type = row.type
        if row.taken_over:
            rt.counts["lease_takeovers"] += 1
            rt.telemetry.lease_takeover(task_type)
        if row.status != "running":
            rt.counts["takeover_failures"] += 1
            continue
        claimed += 1
        left, elapsed = row.attempts_left, row.attempts_elapsed
        # The stored counters already count this attempt; handlers see the Go library's view.
        info = TaskInfo(
            row.id,
            task_type,
            row.payload,
            row.idempotency_token,
            left + 1,
            elapsed - 1 if elapsed > 0 else 0,
            row.created_at,
            row.attempted_at,
            tuple(row.messages) if row.messages else (),
        )
        lease = Lease(row.id, row.lease_token, task_type, info, left, elapsed, row.trace_context)
        add(lease)
        sends[task_type].send_nowait(lease)
    rt.counts["claimed"] += claimed
