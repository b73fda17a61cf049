"""The data edge as the actors see it: the repositories' Protocols and the rows they return.

Theory of operation
-------------------
The repository (``_pg/_tasks_repo.py``, `PgTasks`) runs the queue's statements and turns what
the server sends back into the values below; actors read named fields and never see a raw
tuple.  `ClaimedTask` is on the hot path (one per claimed task), so it is a `NamedTuple` built
with ``ClaimedTask._make(row)``: a C-level tuple copy, no per-field work.  The others are read
once per batch or per notification.

`TasksRepository` is what the consumer's actors use of the repository: the fetcher, the
completer, the lease keeper, the listener and the queue sampler each call a few of its methods.
`MaintenanceRepository` is what the elector, the janitor and the cleaner use of the
maintenance repository (``_pg/_maintenance_repo.py``, `PgMaintenance`): election, resignation,
rescue and clean, every write fenced on the leader row.  Each method of either checks out its
own connection.  `FakeDatabase` (``asynqpg_trio.testing``) implements both in memory, and the
contract suite (``tests/contract``) holds it to what PostgreSQL does.  Pure: no I/O library is
imported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ._batching import FlushPlan
from ._pacing import ClaimPlan
from ._progress import Progress
from ._rescue import ExpiredLease, RescueBatch, RescuePlan

__all__ = [
    "ClaimedTask",
    "LostLease",
    "MaintenanceRepository",
    "Notice",
    "QueueDepth",
    "TasksRepository",
]


class ClaimedTask(NamedTuple):
    """One row a claim returned: a task now leased to this consumer (or, when ``status`` is
    not ``running``, an expired lease taken over and failed for want of attempts).

    The fields follow the claim's RETURNING list, in order.  The stored counters already count
    this attempt.  ``messages`` is None when there are none; ``lease_token`` is None exactly when
    ``status`` is not ``running`` (nothing is leased).  ``taken_over`` says the row was
    running under another (dead) consumer's expired lease.
    """

    id: int
    type: str
    payload: bytes
    idempotency_token: str | None
    status: str
    attempts_left: int
    attempts_elapsed: int
    created_at: datetime
    attempted_at: datetime | None
    messages: list[str] | None
    lease_token: int | None
    trace_context: Any
    taken_over: bool
    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class LostLease:
    """A lease no longer held, and what became of its task.

    Attributes:
        task_id: the task.
        status: its status now (None: deleted); ``cancelled`` is a client's cancel.
        owner: the consumer holding its lease now, if any.
    """

    task_id: int
    status: str | None
    owner: str | None


class QueueDepth(NamedTuple):
    """Per type: pending tasks ready now, and seconds the oldest of them has been ready."""

    type: str
    ready: int
    oldest_age: float


class Notice(NamedTuple):
    """One notification heard on the LISTEN connection: its channel and payload."""

    channel: str
    payload: str


class Listening(Protocol):
    """The LISTEN connection of `TasksRepository.notifications`: iterate it for notices; the
    listener also claims on it (one round trip from a NOTIFY to the claim's reply)."""

    def __aiter__(self) -> AsyncIterator[Notice]: ...

    async def __anext__(self) -> Notice: ...

    async def claim(
        self,
        plan: ClaimPlan,
        *,
        owner: str,
        lease: float,
        takeover_message: str,
        exhausted_message: str,
        grace: float,
    ) -> list[ClaimedTask]:
        """`TasksRepository.claim` on this connection (notices arriving meanwhile are kept)."""
        ...


class TasksRepository(Protocol):
    """What the consumer's actors use of the tasks repository (one method per statement)."""

    async def claim(
        self,
        plan: ClaimPlan,
        *,
        owner: str,
        lease: float,
        takeover_message: str,
        exhausted_message: str,
        grace: float,
    ) -> list[ClaimedTask]:
        """Claim ready tasks as ``plan`` says: per (queue, type) pair, within the type's and
        the queue's room and the cluster-wide limits; paused queues are left out.

        The statement, once sent, is shielded for up to ``grace`` seconds (a committed claim's
        reply must come back); checking out the connection stays cancellable.
        """
        ...

    async def next_ready_in(self, pairs: Sequence[tuple[str, str]]) -> float | None:
        """Seconds until the earliest task of these (queue, type) pairs is ready (None if
        none), paused queues left out."""
        ...

    async def write_outcomes(self, plan: FlushPlan) -> set[int]:
        """Write a flush plan in one statement, fenced by lease token; return written ids."""
        ...

    async def extend_leases(self, ids: list[int], tokens: list[int], lease: float) -> set[int]:
        """Push the leases forward; return the ids still held."""
        ...

    async def write_progress(self, reports: Sequence[tuple[int, int, Progress]]) -> set[int]:
        """Store the latest progress of running tasks, each (id, lease token, progress) fenced
        by its lease; return the ids written."""
        ...

    async def lost_leases(self, ids: list[int], tokens: list[int]) -> list[LostLease]:
        """Of these leases, those no longer held (cancelled, taken over, rescued, deleted)."""
        ...

    async def queue_depth(
        self, types: Sequence[str], queues: Sequence[str] = ("default",)
    ) -> list[QueueDepth]:
        """Per type: pending tasks ready now and the age of the oldest."""
        ...

    def notifications(self) -> AbstractAsyncContextManager[Listening]:
        """A dedicated connection LISTENing for wake-ups and cancels: entered once LISTEN is
        in effect; iterate it for notices, or claim on it."""
        ...


class MaintenanceRepository(Protocol):
    """What the elector, the janitor and the cleaner need of the database.

    Every write is fenced on the leader row: it happens only while ``me`` holds an unexpired
    lease on ``group``, so a caller that lost the leadership without knowing it changes nothing.
    """

    @property
    def closed(self) -> bool:
        """Whether the connections are gone (the owner closed the pool)."""
        ...

    async def elect(self, group: str, me: str, ttl: float) -> float | None:
        """Try once to win or renew the lease of ``group`` for ``ttl`` seconds.

        Returns:
            The `anyio.current_time` reading taken just before the statement was sent, when
            ``me`` leads afterwards; None when another instance holds the lease.
        """
        ...

    async def resign(self, group: str, me: str) -> bool:
        """Give the lease up (if held) and NOTIFY the followers; return whether it was held."""
        ...

    def resignations(self, group: str) -> AbstractAsyncContextManager[AsyncIterator[None]]:
        """An async context manager listening (on a connection of its own) for resignations
        in ``group``: once entered, LISTEN is in effect; it yields an iterator that yields
        once per resignation."""
        ...

    async def rescue_batch(
        self,
        group: str,
        me: str,
        batch_size: int,
        decide: Callable[[Sequence[ExpiredLease]], RescuePlan],
        idle_timeout: float | None,
    ) -> RescueBatch:
        """Lock up to ``batch_size`` expired leases, ``decide`` their fate, write it."""
        ...

    async def clean_batch(
        self, group: str, me: str, status: str, retention: float, batch_size: int
    ) -> int:
        """Delete up to ``batch_size`` tasks of ``status`` finalized longer than ``retention``
        seconds ago; return how many."""
        ...
