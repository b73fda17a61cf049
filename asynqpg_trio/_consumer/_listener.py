"""The listener: one dedicated connection LISTENing for wake-ups and remote cancels.

Theory of operation
-------------------
``asynqpg_new`` (sent by producers and retries) makes the listener claim ready tasks on its own
connection at once (the fetcher's `Claimer`: the same plan, one claim at a time, only while the
work runs; a NOTIFY during another claim, or while the consumer drains a backlog, wakes the
fetcher instead, so the listener is back at its notices at once).  Our producers put the
most urgent priority they made ready in the payload (others send none): a consumer holding
less urgent tasks claims at once, however little room it has (`Claimer.on_notify`).
``asynqpg_cancel`` (sent
by a client cancelling a running task, payload = task id) cancels that task's handler at once
if this consumer holds its lease.  If the connection is lost the fetcher keeps polling, the
lease keeper's periodic check still catches cancels, and the supervisor reconnects with
back-off; after reconnecting the fetcher is woken once, for whatever was missed.

`serve_listener` reports started once LISTEN is in effect, so a consumer is reported started
only when it can hear producers; the first connection must succeed (start-up fails
otherwise), later losses restart it.

Shutdown: the listener is a service, so it outlives the work; once the work has begun to stop
(`Claimer.close`) a NOTIFY only kicks the stopped fetcher, which nobody hears.  A claim it has
sent is shielded for its grace and dispatched before the lease channels close.

Waits on: the next notification, and a claim it sends.  Cancellation: stops at once (a claim
once sent is shielded, see the fetcher); the connection is closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import TaskStatus

from .._pg._errors import TRANSIENT
from ._shared import RestartCounter, supervise

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._core._book import Lease
    from .._core._rows import ClaimedTask, TasksRepository

__all__ = ["CANCEL_CHANNEL", "NEW_CHANNEL", "run_listener", "serve_listener"]

logger = logging.getLogger("asynqpg_trio.listener")

NEW_CHANNEL = "asynqpg_new"
CANCEL_CHANNEL = "asynqpg_cancel"


class Kick(Protocol):
    """Wakes the fetcher."""

    def kick(self) -> None: ...


class NotifyClaimer(Protocol):
    """Claims on a NOTIFY, on the listener's connection (the fetcher's `Claimer`)."""

    async def on_notify(
        self, claim: Callable[..., Awaitable[list[ClaimedTask]]], priority: int | None = None
    ) -> None: ...


class LostMarker(Protocol):
    """Marks leases lost (cancelling their handlers)."""

    def mark_lost(self, task_ids: list[int]) -> list[Lease]: ...


async def serve_listener(
    tasks: TasksRepository,
    wakeup: Kick,
    book: LostMarker,
    counters: RestartCounter,
    claimer: NotifyClaimer | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen until cancelled; started once LISTEN is in effect.  A transient error on the
    first connection fails the start; later ones restart with back-off (`supervise`).

    Cancellation: a checkpoint; the connection is closed.
    """
    started = False

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    try:
        await run_listener(tasks, wakeup, book, ready, claimer)
        return
    except TRANSIENT:
        if not started:
            raise
    await supervise(counters, "listener", lambda: run_listener(tasks, wakeup, book, ready, claimer))


async def run_listener(
    tasks: TasksRepository,
    wakeup: Kick,
    book: LostMarker,
    ready: Callable[[], None] | None = None,
    claimer: NotifyClaimer | None = None,
) -> None:
    """Listen until cancelled; raises transient errors for the supervisor to restart it.

    ``ready`` is called once LISTEN is in effect.  With a ``claimer``, a wake-up claims on
    this connection at once (see the module docstring); without, it wakes the fetcher.

    Cancellation: a checkpoint; the connection is closed.
    """
    async with tasks.notifications() as notices:
        if ready is not None:
            ready()
        wakeup.kick()
        async for notice in notices:
            if notice.channel == CANCEL_CHANNEL:
                try:
                    task_id = int(notice.payload)
                except ValueError:
                    logger.warning("ignoring malformed cancel notification %r", notice.payload)
                    continue
                book.mark_lost([task_id])
            elif claimer is not None:
                await claimer.on_notify(notices.claim, _priority(notice.payload))
            else:
                wakeup.kick()


def _priority(payload: str) -> int | None:
    """The priority a wake-up announces (None: none, as from a Go producer or a retry)."""
    try:
        return int(payload)
    except ValueError:
        return None
