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
earliest delayed task becomes ready, whichever comes first.

Cancellation: the fetcher stops between statements.  A claim is not cancelled once sent (it
is shielded for up to `CLAIM_GRACE` seconds): a claim the server has committed leases its
tasks to this consumer, so its reply must reach the handler actors, which release the tasks
at once when the consumer is stopping.  Closing its send channels on exit tells the handler
actors no more work comes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from . import _repository as repo
from ._book import Claimed, Lease

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from ._context import Runtime

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


async def run_fetcher(rt: Runtime, sends: dict[str, MemoryObjectSendStream[Claimed]]) -> None:
    """Claim and dispatch until cancelled."""
    types = list(sends)
    limits = {t: rt.config.limit(t) for t in types}
    while True:
        await anyio.lowlevel.checkpoint()  # where a stop reaches the fetcher (see below)
        wanted = plan_claim({t: rt.free(t) for t in types}, rt.book.busy, limits)
        got: dict[str, int] = {}
        if wanted:
            rows: list[dict[str, Any]] = []
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
                got[row["type"]] = got.get(row["type"], 0) + 1
                _dispatch(rt, sends, row)
        rt.backlogged = {t for t, n in wanted.items() if got.get(t, 0) >= n}
        if rt.backlogged and any(rt.free(t) > 0 for t in rt.backlogged):
            continue
        timeout = rt.config.poll_interval
        if not rt.backlogged:
            async with rt.pool.connection() as conn:
                ready_in = await repo.next_ready_in(conn, types)
            if ready_in is not None:
                timeout = min(timeout, max(ready_in, 0.001))
        with anyio.move_on_after(timeout):
            await rt.kick_receive.receive()


def _dispatch(
    rt: Runtime, sends: dict[str, MemoryObjectSendStream[Claimed]], row: dict[str, Any]
) -> None:
    if row["taken_over"]:
        rt.counts["lease_takeovers"] += 1
        rt.telemetry.lease_takeover(row["type"])
    if row["status"] != "running":
        rt.counts["takeover_failures"] += 1
        return
    rt.counts["claimed"] += 1
    claimed = Claimed(
        id=row["id"],
        type=row["type"],
        payload=row["payload"],
        idempotency_token=row["idempotency_token"],
        attempts_left=row["attempts_left"],
        attempts_elapsed=row["attempts_elapsed"],
        created_at=row["created_at"],
        attempted_at=row["attempted_at"],
        messages=tuple(row["messages"]),
        lease_token=row["lease_token"],
        trace_context=row["trace_context"],
    )
    rt.book.add(Lease(claimed.id, claimed.lease_token, claimed.type))
    sends[claimed.type].send_nowait(claimed)
