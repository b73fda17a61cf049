"""The lease book: the tasks this consumer holds a lease on, shared by its actors.

Theory of operation
-------------------
A task enters the book when the fetcher claims it and leaves when the completer has written its
outcome (or found the write stale), or when its lease is found lost.  While it is in the book
the lease keeper renews its lease, so a task whose outcome waits in the completer (the database
being down, say) is never rescued by a janitor meanwhile.  ``busy`` counts, per type, the
claimed tasks not yet finished by a handler, and ``busy_queues`` the same per queue: the
fetcher claims only into free capacity.

Marking a lease lost (cancelled by a client, taken over, deleted) cancels its handler's scope
if one is running; the handler then writes nothing, because any write would be stale.
The book is plain data touched only from the consumer's event loop thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._adaptive import mean_duration

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._task import TaskInfo


__all__ = ["CancelScopeLike", "Lease", "LeaseBook"]


class CancelScopeLike(Protocol):
    """What the book needs of a running handler's cancel scope: that it can be cancelled.

    anyio's `CancelScope` and trio's own both fit; the handler actors pick one per backend
    (trio's is cheaper on Trio).  A Protocol is static only: nothing is checked or wrapped at
    run time.
    """

    def cancel(self) -> None:
        """Cancel the scope (idempotent; not a checkpoint)."""


@dataclass(slots=True, eq=False)
class Lease:
    """One held lease: the claimed task, on its way to or in a handler actor.

    ``attempts_left`` and ``attempts_elapsed`` are the stored counters after the claim (the
    handler's `TaskInfo` shows the Go library's view).  ``scope`` is the running handler's
    cancel scope, if any (anyio's, or trio's own); ``started`` when its handler started (event
    loop clock; -inf until then), for the watchdog.
    """

    task_id: int
    token: int
    type: str
    info: TaskInfo | None = None
    attempts_left: int = 0
    attempts_elapsed: int = 0
    trace_context: Any = None
    scope: CancelScopeLike | None = None
    started: float = -math.inf
    lost: bool = False
    released: bool = False
    queue: str = "default"

    def is_lost(self) -> bool:
        """Whether the lease was found lost (read after an await: it may have changed)."""
        return self.lost


@dataclass(slots=True)
class LeaseBook:
    """Every lease this consumer holds, and busy counts per type and per queue."""

    leases: dict[int, Lease] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)
    busy_queues: dict[str, int] = field(default_factory=dict)
    #: Per type, the mean seconds a handler run takes (`_adaptive.mean_duration`).
    durations: dict[str, float] = field(default_factory=dict)

    def ran(self, task_type: str, seconds: float) -> None:
        """Record one handler run of ``task_type`` that took ``seconds``."""
        self.durations[task_type] = mean_duration(self.durations.get(task_type), seconds)

    def add(self, lease: Lease) -> None:
        """Record a new claim."""
        self.leases[lease.task_id] = lease
        self.busy[lease.type] = self.busy.get(lease.type, 0) + 1
        self.busy_queues[lease.queue] = self.busy_queues.get(lease.queue, 0) + 1

    def finished(self, lease: Lease) -> None:
        """A handler slot of ``lease``'s type and queue is free again."""
        self.busy[lease.type] -= 1
        self.busy_queues[lease.queue] -= 1

    def forget(self, task_id: int, token: int) -> None:
        """Drop a lease whose outcome is written (or whose write was stale)."""
        lease = self.leases.get(task_id)
        if lease is not None and lease.token == token:
            del self.leases[task_id]

    def type_of(self, task_id: int) -> str:
        """The type of a held task (``""`` if it is not held)."""
        lease = self.leases.get(task_id)
        return "" if lease is None else lease.type

    def snapshot(self) -> tuple[list[int], list[int]]:
        """Parallel lists of held task ids and lease tokens."""
        held = [lease for lease in self.leases.values() if not lease.lost]
        return [lease.task_id for lease in held], [lease.token for lease in held]

    def mark_lost(self, task_ids: Iterable[int]) -> list[Lease]:
        """Mark leases lost and cancel their running handlers; return the leases newly found
        lost whose handler was running."""
        running: list[Lease] = []
        for task_id in task_ids:
            lease = self.leases.get(task_id)
            if lease is None or lease.lost:
                continue
            lease.lost = True
            if lease.scope is not None:
                running.append(lease)
                lease.scope.cancel()
        return running

    def release_running(self) -> None:
        """At the end of the shutdown grace: cancel every running handler for release."""
        for lease in self.leases.values():
            if lease.scope is not None:
                lease.released = True
                lease.scope.cancel()
