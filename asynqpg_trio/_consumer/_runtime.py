"""What the consumer's actors share: settings, the pool, the lease book, counters, signals."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from .._core._book import LeaseBook
from .._pg._errors import TRANSIENT
from .._telemetry._telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._core._config import ConsumerConfig, ErrorHandler
    from .._core._retry import RetryPolicy
    from .._pg._pool import Pool

__all__ = ["Runtime", "supervise"]

logger = logging.getLogger("asynqpg_trio.consumer")


@dataclass(eq=False)
class Runtime:
    """Shared state of one running consumer (touched only from its event loop)."""

    config: ConsumerConfig
    pool: Pool
    policy: RetryPolicy
    error_handler: ErrorHandler | None
    book: LeaseBook = field(default_factory=LeaseBook)
    telemetry: Telemetry = field(default_factory=Telemetry)
    counts: Counter[str] = field(default_factory=Counter)
    stopping: bool = False
    backlogged: set[str] = field(default_factory=set)
    pending_writes: int = 0
    kicked: bool = False  # a wake-up waits in the kick channel
    kick_send: MemoryObjectSendStream[None] = field(init=False)
    kick_receive: MemoryObjectReceiveStream[None] = field(init=False)

    def __post_init__(self) -> None:
        self.kick_send, self.kick_receive = anyio.create_memory_object_stream[None](1)

    def kick(self) -> None:
        """Wake the fetcher (at most one wake-up is kept)."""
        if self.kicked:  # the cheap answer for a handler finishing each task of a backlog
            return
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self.kick_send.send_nowait(None)
            self.kicked = True

    async def wait_kick(self, deadline: float) -> None:
        """Wait for a wake-up from `kick`, at most until ``deadline`` (event loop clock)."""
        with anyio.move_on_at(deadline):
            await self.kick_receive.receive()
            self.kicked = False

    def free(self, task_type: str) -> int:
        """Free claim capacity of a type."""
        return self.config.limit(task_type) - self.book.busy.get(task_type, 0)


async def supervise(rt: Runtime, name: str, actor: Callable[[], Awaitable[None]]) -> None:
    """Run ``actor``; restart it with exponential back-off after transient database errors.

    Any other exception is a bug and propagates, tearing the consumer down.
    """
    delay = 0.05
    while True:
        try:
            await actor()
            return
        except TRANSIENT as exc:
            rt.counts["actor_restarts"] += 1
            logger.warning("%s: database error, restarting in %.2f s: %s", name, delay, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
