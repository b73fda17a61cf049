"""The contract suite's backends: the same tests run against `FakeDatabase` and PostgreSQL.

A backend is a tasks repository (``backend.tasks``, what the consumer's actors call) and a
maintenance repository (``backend.maintenance``, what the elector, the janitor and the cleaner
call) plus what a test needs around them: enqueue, a client's cancel, a clock it can move, a
view of one row that reads the same on both (times relative to the backend's now), and who
leads a group.

* ``fake``: `FakeDatabase` on a clock that moves only when the test says so; pause, resume
  and limits through its test helpers.
* ``pg``: `PgTasks` and `PgMaintenance` on a fresh database, through a one-connection pool
  whose session setting ``asynqpg.clock_offset`` shifts ``asynqpg_now()``; moving the clock
  adds to it (LISTEN takes a connection of its own, whose clock does not matter).  The server's
  clock also runs on in real time (milliseconds per test), hence the tolerance of `approx`.
  Enqueue, cancel, pause, resume and limits go through the public `Producer` and `Client`, on
  that one connection, so a rate limit's bucket is filled and refilled on the shifted clock.

Where the two disagree, the fake is wrong: PostgreSQL is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from asynqpg_trio import Client, Producer, Task, open_pool
from asynqpg_trio._core._results import decode_result
from asynqpg_trio._pg._maintenance_repo import PgMaintenance
from asynqpg_trio._pg._tasks_repo import PgTasks
from asynqpg_trio.testing import FakeDatabase

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asynqpg_trio import Pool
    from asynqpg_trio._core._rows import MaintenanceRepository, TasksRepository

#: How far a PostgreSQL time may drift from the expected one within a test (seconds).
TOLERANCE = 1.0


def approx(expected: float) -> Any:
    """``expected`` give or take `TOLERANCE` (for times read back from a backend)."""
    return pytest.approx(expected, abs=TOLERANCE)


@dataclass(frozen=True)
class View:
    """One task row as both backends can report it.

    ``ready_in`` is ``blocked_till`` minus the backend's now (while running: the lease's
    remaining time).
    """

    status: str
    attempts_left: int
    attempts_elapsed: int
    messages: tuple[str, ...]
    leased: bool
    lease_owner: str | None
    ready_in: float
    finalized: bool
    #: The stored result, decoded (None: none), and the stored progress and note.
    result: Any = None
    progress: float | None = None
    progress_note: str | None = None


class Backend(Protocol):
    """The repositories under test, and the test's handles on them."""

    name: str
    tasks: TasksRepository
    maintenance: MaintenanceRepository

    async def enqueue(
        self,
        task_type: str = "t",
        *,
        delay: float = 0.0,
        max_retry: int = 3,
        queue: str = "default",
        priority: int = 0,
    ) -> int:
        """Enqueue a task as a producer does; return its id."""
        ...

    async def enqueue_many(
        self, n: int, task_type: str = "t", *, queue: str = "default", priority: int = 0
    ) -> list[int]:
        """Enqueue ``n`` tasks due at one instant (one batch); return their ids in order."""
        ...

    async def pause(self, queue: str) -> None:
        """Pause a queue as an operator does."""
        ...

    async def resume(self, queue: str) -> None:
        """Resume a queue as an operator does."""
        ...

    async def set_limit(
        self,
        scope: str,
        name: str,
        *,
        max_running: int | None = None,
        rate: int | None = None,
        per: float = 1.0,
        burst: int | None = None,
    ) -> None:
        """Set the cluster-wide limit on a queue or a type (``scope``: "queue" or "type")."""
        ...

    async def clear_limit(self, scope: str, name: str) -> None:
        """Remove the limit on a queue or a type."""
        ...

    async def advance(self, seconds: float) -> None:
        """Move the backend's clock forward."""
        ...

    async def cancel(self, task_id: int) -> None:
        """Cancel a task as a client does."""
        ...

    async def view(self, task_id: int) -> View | None:
        """The row now (None: no such row)."""
        ...

    async def leader(self, group: str) -> str | None:
        """Who holds an unexpired lease on ``group`` now (None: nobody)."""
        ...


class FakeBackend:
    """`FakeDatabase` on a manual clock."""

    name = "fake"

    def __init__(self) -> None:
        self.now = 1000.0
        self.db = FakeDatabase(clock=lambda: self.now)
        self.tasks: TasksRepository = self.db
        self.maintenance: MaintenanceRepository = self.db

    async def enqueue(
        self,
        task_type: str = "t",
        *,
        delay: float = 0.0,
        max_retry: int = 3,
        queue: str = "default",
        priority: int = 0,
    ) -> int:
        return self.db.enqueue(
            task_type, delay=delay, max_retry=max_retry, queue=queue, priority=priority
        )

    async def enqueue_many(
        self, n: int, task_type: str = "t", *, queue: str = "default", priority: int = 0
    ) -> list[int]:
        return [self.db.enqueue(task_type, queue=queue, priority=priority) for _ in range(n)]

    async def pause(self, queue: str) -> None:
        self.db.pause(queue)

    async def resume(self, queue: str) -> None:
        self.db.resume(queue)

    async def set_limit(
        self,
        scope: str,
        name: str,
        *,
        max_running: int | None = None,
        rate: int | None = None,
        per: float = 1.0,
        burst: int | None = None,
    ) -> None:
        self.db.set_limit(
            scope,
            name,
            max_running=max_running,
            rate=None if rate is None else (rate, per),
            burst=burst,
        )

    async def clear_limit(self, scope: str, name: str) -> None:
        self.db.clear_limit(scope, name)

    async def advance(self, seconds: float) -> None:
        self.now += seconds

    async def cancel(self, task_id: int) -> None:
        self.db.cancel(task_id)

    async def view(self, task_id: int) -> View | None:
        found = [t for t in self.db.rows() if t.id == task_id]
        if not found:
            return None
        (t,) = found
        return View(
            t.status.value,
            t.attempts_left,
            t.attempts_elapsed,
            t.messages,
            t.lease_token is not None,
            t.lease_owner,
            t.blocked_till - self.now,
            t.finalized_at is not None,
            t.result,
            t.progress,
            t.progress_note,
        )

    async def leader(self, group: str) -> str | None:
        return self.db.leader(group)


READ_VIEW = """
    SELECT status, attempts_left, attempts_elapsed, messages, lease_token IS NOT NULL,
           lease_owner, extract(epoch FROM blocked_till - asynqpg_now())::float8,
           finalized_at IS NOT NULL, result, result_codec, progress, progress_note
    FROM asynqpg_tasks WHERE id = %(id)s
"""
SET_OFFSET = "SELECT set_config('asynqpg.clock_offset', %(offset)s, false)"
READ_LEADER = """
    SELECT leader_id FROM asynqpg_leader WHERE name = %(group)s AND expires_at > asynqpg_now()
"""


class PgBackend:
    """`PgTasks` and `PgMaintenance` on a one-connection pool whose session clock is shifted
    by ``offset``."""

    name = "pg"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.offset = 0.0
        self.tasks: TasksRepository = PgTasks(pool)
        self.maintenance: MaintenanceRepository = PgMaintenance(pool)
        self.producer = Producer(pool)
        self.client = Client(pool)

    async def enqueue(
        self,
        task_type: str = "t",
        *,
        delay: float = 0.0,
        max_retry: int = 3,
        queue: str = "default",
        priority: int = 0,
    ) -> int:
        task = Task(
            task_type, b"", delay=delay, max_retry=max_retry, queue=queue, priority=priority
        )
        return await self.producer.enqueue(task)

    async def enqueue_many(
        self, n: int, task_type: str = "t", *, queue: str = "default", priority: int = 0
    ) -> list[int]:
        tasks = [Task(task_type, b"", queue=queue, priority=priority) for _ in range(n)]
        ids = await self.producer.enqueue_many(tasks)
        return [i for i in ids if i is not None]

    async def pause(self, queue: str) -> None:
        await self.client.pause_queue(queue)

    async def resume(self, queue: str) -> None:
        await self.client.resume_queue(queue)

    async def set_limit(
        self,
        scope: str,
        name: str,
        *,
        max_running: int | None = None,
        rate: int | None = None,
        per: float = 1.0,
        burst: int | None = None,
    ) -> None:
        queue, task_type = (name, None) if scope == "queue" else (None, name)
        await self.client.set_limit(
            queue=queue, type=task_type, max_running=max_running, rate=rate, per=per, burst=burst
        )

    async def clear_limit(self, scope: str, name: str) -> None:
        queue, task_type = (name, None) if scope == "queue" else (None, name)
        await self.client.clear_limit(queue=queue, type=task_type)

    async def advance(self, seconds: float) -> None:
        self.offset += seconds
        async with self.pool.connection() as conn:
            await conn.execute(SET_OFFSET, {"offset": f"{self.offset} seconds"})

    async def cancel(self, task_id: int) -> None:
        await self.client.cancel_task(task_id)

    async def view(self, task_id: int) -> View | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(READ_VIEW, {"id": task_id})
            row = await cur.fetchone()
        if row is None:
            return None
        status, left, elapsed, messages, leased, owner, ready_in, finalized, *rest = row
        result, codec, progress, note = rest
        return View(
            status,
            left,
            elapsed,
            tuple(messages),
            leased,
            owner,
            ready_in,
            finalized,
            decode_result(result, codec),
            progress,
            note,
        )

    async def leader(self, group: str) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(READ_LEADER, {"group": group})
            row = await cur.fetchone()
        return None if row is None else str(row[0])


@pytest.fixture(params=["fake", "pg"])
def backend_dsn(request: pytest.FixtureRequest) -> str | None:
    """None for the fake; for PostgreSQL, a fresh database's DSN (made only for ``pg``)."""
    if request.param == "fake":
        return None
    dsn: str = request.getfixturevalue("dsn")
    return dsn


@pytest.fixture
async def backend(backend_dsn: str | None) -> AsyncIterator[Backend]:
    """The backend under test (see the module docstring)."""
    if backend_dsn is None:
        yield FakeBackend()
        return
    async with open_pool(backend_dsn, min_size=1, max_size=1) as pool:
        yield PgBackend(pool)
