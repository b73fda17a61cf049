"""A task type's claimed leases on their way to its handler actors, most urgent first.

Theory of operation
-------------------
A claim orders the rows it takes (larger priority first, then due time, then id), but a
consumer draining a backlog holds a prefetch buffer of earlier claims: with a first-in,
first-out channel an urgent task claimed now would start only after everything claimed before
it.  `open_lease_buffer` keeps that order across claims instead.

It is a bounded memory channel of tickets (``None``) beside the leases, kept in one queue per
priority level: sending adds one lease and one ticket, receiving takes one ticket and then the
most urgent lease (the larger priority; among equals, the one sent first). Tickets and leases
are added and removed together without a checkpoint between, so every ticket has its lease; the
channel supplies everything else unchanged: its bound, blocking and cancellation (a receiver
cancelled while waiting has taken no ticket, so no lease), clones for several actors, and the
end of stream once the sender is closed and every ticket is taken.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Generic, Protocol, Self, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core._book import Lease
from .._core._task import MAX_PRIORITY, MIN_PRIORITY

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["LeaseReceiver", "LeaseSender", "open_lease_buffer"]

_LEVELS = MAX_PRIORITY - MIN_PRIORITY + 1


class _Levels:
    """The leases waiting, one first-in, first-out queue per priority level (the levels are
    few and fixed); `pop` takes from the most urgent level that holds any."""

    __slots__ = ("levels", "top")

    def __init__(self) -> None:
        self.levels: list[deque[Lease]] = [deque() for _ in range(_LEVELS)]
        self.top = -1  # the highest level that may hold leases (-1: none)

    def push(self, lease: Lease) -> None:
        priority = lease.info.priority if lease.info is not None else 0
        level = min(max(priority, MIN_PRIORITY), MAX_PRIORITY) - MIN_PRIORITY
        self.levels[level].append(lease)
        self.top = max(self.top, level)

    def pop(self) -> Lease:
        levels = self.levels
        while not levels[self.top]:
            self.top -= 1
        return levels[self.top].popleft()


class _Closes(Protocol):
    def close(self) -> None: ...


_Tickets = TypeVar("_Tickets", bound=_Closes)


class _End(Generic[_Tickets]):
    """One end of a buffer: its ticket stream and the shared levels; closed by `close` or on
    leaving a ``with`` or ``async with`` block."""

    __slots__ = ("_levels", "_tickets")

    def __init__(self, tickets: _Tickets, levels: _Levels) -> None:
        self._tickets, self._levels = tickets, levels

    def close(self) -> None:
        """Close this end (a receiving end: the buffer stays open while its clones are; the
        sending end: receivers end once the buffer is empty)."""
        self._tickets.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LeaseSender(_End[MemoryObjectSendStream[None]]):
    """The fetcher's end of a type's buffer."""

    __slots__ = ()

    def send_nowait(self, lease: Lease) -> None:
        """Add ``lease`` (anyio.WouldBlock when the buffer is full: nothing is added)."""
        self._tickets.send_nowait(None)
        self._levels.push(lease)


class LeaseReceiver(_End[MemoryObjectReceiveStream[None]]):
    """A handler actor's end of a type's buffer (`clone` one per actor)."""

    __slots__ = ()

    async def receive(self) -> Lease:
        """The most urgent lease, waiting for one (anyio.EndOfStream once closed and empty)."""
        await self._tickets.receive()
        return self._levels.pop()

    def receive_nowait(self) -> Lease:
        """The most urgent lease now (anyio.WouldBlock: none; anyio.EndOfStream: none ever)."""
        self._tickets.receive_nowait()
        return self._levels.pop()

    def clone(self) -> LeaseReceiver:
        """Another receiving end of the same buffer."""
        return LeaseReceiver(self._tickets.clone(), self._levels)


def open_lease_buffer(max_size: int) -> tuple[LeaseSender, LeaseReceiver]:
    """A buffer of at most ``max_size`` leases: its sending and receiving ends."""
    tickets_in, tickets_out = anyio.create_memory_object_stream[None](max_size)
    levels = _Levels()
    return LeaseSender(tickets_in, levels), LeaseReceiver(tickets_out, levels)
