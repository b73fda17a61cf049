"""The consumer registry's values and Protocol, and how its rows read (pure: no I/O here).

Theory of operation
-------------------
Each running consumer keeps one row in ``asynqpg_consumers``: who it is (`Registration`:
id, host, pid, version, the queues it serves and its handlers' worker counts), when it
started, when it last sent a heartbeat and how many tasks it held then.  It writes the row
itself through a `RegistryRepository`: `register` when its lease keeper starts, `heartbeat`
every ``heartbeat_every`` seconds (the lease keeper's renewal period, so the registry adds
one small UPDATE per period and no actor), `deregister` at a graceful shutdown.

A consumer that dies keeps its row until it ages out: a row whose last heartbeat is older
than `DEAD_AFTER` heartbeat periods is dead.  Readers (`Client`-side views: the CLI's
``consumers`` command and the dashboard's Consumers page) show live rows only, and each
registration deletes the dead ones, so the table holds about one row per live consumer.

"What each is running now" is read from the tasks themselves: the running rows whose lease
owner is the consumer's id (`RunningTask`), the same column the task page shows as "Held by".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ._views import format_age

__all__ = [
    "DEAD_AFTER",
    "ConsumerRow",
    "Registration",
    "RegistryRepository",
    "RunningTask",
    "consumer_document",
]

#: Heartbeat periods without a heartbeat after which a consumer counts as dead.
DEAD_AFTER = 3


@dataclass(frozen=True, slots=True)
class Registration:
    """What a consumer says about itself when it registers.

    Attributes:
        consumer_id: its id (the lease owner its running tasks carry).
        host: the host name it runs on.
        pid: its process id.
        version: the asynqpg-trio version it runs.
        queues: queue name -> its cap in this consumer (None: no cap).
        handlers: task type -> the number of workers running that type.
        heartbeat_every: seconds between its heartbeats.
    """

    consumer_id: str
    host: str
    pid: int
    version: str
    queues: Mapping[str, int | None]
    handlers: Mapping[str, int]
    heartbeat_every: float


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task running under a consumer's lease.

    Attributes:
        owner: the consumer holding the lease.
        id: the task.
        type: its type.
        queue: its queue.
        started_at: when this attempt started.
        lease_expires: when the lease runs out unless renewed.
    """

    owner: str
    id: int
    type: str
    queue: str
    started_at: datetime | None
    lease_expires: datetime


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    """A live consumer as the registry holds it, with the tasks it is running now.

    Attributes:
        id, host, pid, version, queues, handlers, heartbeat_every: as it registered.
        in_flight: the tasks it held at its last heartbeat.
        started_at: when it registered.
        heartbeat_at: its last heartbeat.
        heartbeat_age: seconds since then (by the database clock).
        running: the tasks running under its lease now.
    """

    id: str
    host: str
    pid: int
    version: str
    queues: Mapping[str, int | None]
    handlers: Mapping[str, int]
    heartbeat_every: float
    in_flight: int
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    running: tuple[RunningTask, ...] = field(default=())


class RegistryRepository(Protocol):
    """What a consumer's lease keeper writes of its own registry row."""

    async def register(self, registration: Registration, in_flight: int) -> None:
        """Insert or refresh the row (and delete the rows of dead consumers)."""
        ...

    async def heartbeat(self, consumer_id: str, in_flight: int) -> bool:
        """Record a heartbeat; False when the row is gone (register again)."""
        ...

    async def deregister(self, consumer_id: str) -> None:
        """Delete the row."""
        ...


def consumer_document(row: ConsumerRow) -> dict[str, Any]:
    """A consumer as JSON-ready data (times ISO 8601), shared by the CLI and the dashboard."""
    return {
        "id": row.id,
        "host": row.host,
        "pid": row.pid,
        "version": row.version,
        "queues": dict(row.queues),
        "handlers": dict(row.handlers),
        "workers": sum(row.handlers.values()),
        "heartbeat_every": row.heartbeat_every,
        "in_flight": row.in_flight,
        "started_at": row.started_at.isoformat(),
        "heartbeat_at": row.heartbeat_at.isoformat(),
        "heartbeat_age": row.heartbeat_age,
        "heartbeat_ago": format_age(row.heartbeat_age),
        "running": [
            {
                "id": t.id,
                "type": t.type,
                "queue": t.queue,
                "started_at": None if t.started_at is None else t.started_at.isoformat(),
                "lease_expires": t.lease_expires.isoformat(),
            }
            for t in row.running
        ],
    }
