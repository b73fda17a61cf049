"""What the consumer's actors share: counters, the fetcher's wake-up, the stop flags, and the
supervisor that restarts an actor after a transient database error.

Theory of operation
-------------------
Everything here is plain data touched only from the consumer's event loop.  No actor sees all
of it: each declares, at the top of its module, a Protocol for the few attributes it uses,
and the tree passes it these concrete objects (no wrappers on the hot path).

* `Counters`: one int per `ConsumerStatistics` counter; ``Consumer.statistics`` snapshots it.
* `Wakeup`: a one-slot kick channel that wakes the fetcher (the listener on a NOTIFY, a
  handler freeing a slot of a backlogged type), and the set of backlogged types.
* `Stopping`: set once the shutdown begins; handler actors then release what they receive.
* `StopControl`: the consumer's stop requests, and the tree's scope for `stop_now` to cancel.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from .._core._config import ConsumerStatistics
from .._pg._errors import TRANSIENT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Counters", "StopControl", "Stopping", "Wakeup", "supervise"]

logger = logging.getLogger("asynqpg_trio.consumer")


@dataclass(slots=True, eq=False)
class Counters:
    """One consumer's counters (see `ConsumerStatistics` for what each counts)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    snoozed: int = 0
    released: int = 0
    cancelled: int = 0
    stale_acks: int = 0
    leases_lost: int = 0
    loop_stalls: int = 0
    lease_takeovers: int = 0
    takeover_failures: int = 0
    actor_restarts: int = 0
    abandoned: int = 0

    def snapshot(self, *, in_flight: int, pending_writes: int) -> ConsumerStatistics:
        """A frozen copy, with the two figures that are read, not counted."""
        return ConsumerStatistics(
            claimed=self.claimed,
            completed=self.completed,
            failed=self.failed,
            retried=self.retried,
            snoozed=self.snoozed,
            released=self.released,
            cancelled=self.cancelled,
            stale_acks=self.stale_acks,
            leases_lost=self.leases_lost,
            loop_stalls=self.loop_stalls,
            lease_takeovers=self.lease_takeovers,
            takeover_failures=self.takeover_failures,
            in_flight=in_flight,
            pending_writes=pending_writes,
            actor_restarts=self.actor_restarts,
            abandoned=self.abandoned,
        )


class Wakeup:
    """The fetcher's wake-up: at most one kick is kept; ``backlogged`` names the types whose
    last claim got all it asked for (a handler freeing a slot of one of them kicks)."""

    __slots__ = ("_receive", "_send", "backlogged", "kicked")

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[None](1)
        self.kicked: bool = False  # a kick waits in the channel
        self.backlogged: set[str] = set()

    def kick(self) -> None:
        """Wake the fetcher (not a checkpoint)."""
        if self.kicked:  # the cheap answer for a handler finishing each task of a backlog
            return
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._send.send_nowait(None)
            self.kicked = True

    async def wait(self, deadline: float) -> None:
        """Wait for a kick, at most until ``deadline`` (event loop clock).

        Cancellation: a checkpoint; a kick not yet taken stays.
        """
        with anyio.move_on_at(deadline):
            await self._receive.receive()
            self.kicked = False

    def close(self) -> None:
        """Close the channel (kicks are ignored from now on)."""
        self._send.close()
        self._receive.close()


@dataclass(slots=True, eq=False)
class Stopping:
    """Set once, when the shutdown begins."""

    stopping: bool = False


@dataclass(eq=False)
class StopControl:
    """A consumer's stop requests, and what the tree's shutdown acts on."""

    #: `Consumer.stop` was called (what `Consumer.wait_stopped` waits for).
    requested: anyio.Event = field(default_factory=anyio.Event)
    #: The ``async with`` block ended: the tree shuts down.
    ending: anyio.Event = field(default_factory=anyio.Event)
    #: `Consumer.stop_now` was called: the shutdown is (or starts) cut short.
    now: bool = False
    #: The tree's scope, once it runs (cancelled to cut the shutdown short).
    tree_scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        """Ask for a graceful shutdown."""
        self.requested.set()

    def stop_now(self) -> None:
        """Cut the shutdown short, whether it has begun or not."""
        self.requested.set()
        self.now = True
        if self.ending.is_set() and self.tree_scope is not None:
            self.tree_scope.cancel()


class RestartCounter(Protocol):
    """What `supervise` counts."""

    actor_restarts: int


async def supervise(
    counters: RestartCounter, name: str, actor: Callable[[], Awaitable[None]]
) -> None:
    """Run ``actor``; restart it with exponential back-off after transient database errors.

    Any other exception is a bug and propagates, tearing the consumer down.

    Cancellation: a checkpoint; cancels the actor.
    """
    delay = 0.05
    while True:
        try:
            await actor()
            return
        except TRANSIENT as exc:
            counters.actor_restarts += 1
            logger.warning("%s: database error, restarting in %.2f s: %s", name, delay, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
