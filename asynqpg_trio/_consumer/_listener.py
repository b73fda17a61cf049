"""The listener: one dedicated connection LISTENing for wake-ups and remote cancels.

Theory of operation
-------------------
``asynqpg_new`` (sent by producers and retries) wakes the fetcher; ``asynqpg_cancel`` (sent by
a client cancelling a running task, payload = task id) cancels that task's handler at once if
this consumer holds its lease.  If the connection is lost the fetcher keeps polling, the lease
keeper's periodic check still catches cancels, and the supervisor reconnects with back-off;
after reconnecting the fetcher is woken once, for whatever was missed.

``ready`` is called once LISTEN is in effect, so a consumer is reported started only when it
can hear producers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._runtime import Runtime

__all__ = ["CANCEL_CHANNEL", "NEW_CHANNEL", "run_listener"]

logger = logging.getLogger("asynqpg_trio.listener")

NEW_CHANNEL = "asynqpg_new"
CANCEL_CHANNEL = "asynqpg_cancel"


async def run_listener(rt: Runtime, ready: Callable[[], None] | None = None) -> None:
    """Listen until cancelled; raises transient errors for the supervisor to restart it.

    ``ready`` is called once LISTEN is in effect.
    """
    conn = await rt.pool.connect()
    try:
        await conn.execute(f"LISTEN {NEW_CHANNEL}")
        await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
        if ready is not None:
            ready()
        rt.kick()
        async for note in conn.notifies():
            if note.channel == CANCEL_CHANNEL:
                try:
                    task_id = int(note.payload)
                except ValueError:
                    logger.warning("ignoring malformed cancel notification %r", note.payload)
                    continue
                rt.book.mark_lost([task_id])
            else:
                rt.kick()
    finally:
        await conn.close()
