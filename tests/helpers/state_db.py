"""Run the state table's events through the production SQL under a pinned database clock.

Shared by ``tests/test_state_sql.py`` (one row per case, rolled back) and
``proptests/test_stateful_db.py`` (a Hypothesis state machine over one database).

The clock: a step runs in one transaction that first pins ``asynqpg_now()`` to a chosen
instant, ``BASE`` plus ``at`` seconds, by setting ``asynqpg.clock_offset`` (transaction-local)
to that instant minus ``now()``.  ``now()`` is fixed for a transaction, so every statement of
the step sees the same clock, time moves only when the caller says so, and a model can predict
``blocked_till`` and ``finalized_at`` to the microsecond.  Rows are read back as
``_state.TaskRow`` values whose times are seconds since ``BASE``.

The janitor's functions take a `Pool`; `OneConnection` lends them the step's connection, so
they run inside the step's transaction (their own transactions become savepoints).
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from asynqpg_trio._core._batching import CompletionBatch, FlushPlan, Outcome, OutcomeKind
from asynqpg_trio._core._errors import (
    AsynqpgError,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskNotFound,
    TaskRunning,
)
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._row import TaskRow, TaskStatus
from asynqpg_trio._core._state import Event
from asynqpg_trio._maintenance._janitor import (
    FINAL_STATUSES,
    RescueResult,
    clean_finalized,
    rescue_expired,
)
from asynqpg_trio._pg import _tasks_repo as repo
from asynqpg_trio._pg._maintenance_repo import PgMaintenance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    import psycopg

    from asynqpg_trio import Pool

#: Instant 0 of the pinned clock.
BASE: Final = datetime(2030, 1, 1, tzinfo=UTC)
#: The one task type the model uses.
TYPE: Final = "t"
OWNER: Final = "model-consumer"
JANITOR: Final = "model-janitor"
GROUP: Final = "default"
TAKEOVER_MESSAGE: Final = "lease expired"
EXHAUSTED_MESSAGE: Final = "lease expired; no attempt left"

#: The outcome kind the consumer reports for each handler event.
KIND_OF: Final[dict[Event, OutcomeKind]] = {
    Event.COMPLETE: OutcomeKind.COMPLETE,
    Event.FAIL: OutcomeKind.FAIL,
    Event.SKIP_RETRY: OutcomeKind.FAIL,
    Event.RETRY: OutcomeKind.RETRY,
    Event.SNOOZE_WITH_ERROR: OutcomeKind.RETRY,
    Event.SNOOZE: OutcomeKind.SNOOZE,
    Event.RELEASE: OutcomeKind.RELEASE,
}
#: The event a written outcome of each kind is (FAIL and RETRY stand for their twins too).
EVENT_OF: Final[dict[OutcomeKind, Event]] = {
    OutcomeKind.COMPLETE: Event.COMPLETE,
    OutcomeKind.FAIL: Event.FAIL,
    OutcomeKind.RETRY: Event.RETRY,
    OutcomeKind.SNOOZE: Event.SNOOZE,
    OutcomeKind.RELEASE: Event.RELEASE,
}

PIN_CLOCK: Final = (
    "SELECT set_config('asynqpg.clock_offset', (%(at)s::timestamptz - now())::text, true)"
)
READ_ROWS: Final = """
    SELECT id, status, attempts_left, attempts_elapsed, cardinality(messages),
           extract(epoch FROM finalized_at - %(base)s)::float8,
           extract(epoch FROM blocked_till - %(base)s)::float8,
           lease_token, lease_owner
    FROM asynqpg_tasks ORDER BY id
"""
INSERT_ROW: Final = """
    INSERT INTO asynqpg_tasks (type, payload, status, messages, blocked_till, attempts_left,
        attempts_elapsed, finalized_at, lease_token, lease_owner, created_at, updated_at)
    VALUES (%(type)s, '\\x00', %(status)s, array_fill('earlier'::text, ARRAY[%(n)s::int]),
        %(blocked)s, %(left)s, %(elapsed)s, %(finalized)s, %(token)s, %(owner)s,
        asynqpg_now(), asynqpg_now())
    RETURNING id
"""
MAKE_LEADER: Final = """
    INSERT INTO asynqpg_leader (name, leader_id, elected_at, expires_at)
    VALUES (%(group)s, %(me)s, now(), 'infinity')
    ON CONFLICT (name) DO UPDATE SET leader_id = excluded.leader_id, expires_at = 'infinity'
"""


def instant(at: float) -> datetime:
    """The pinned clock's ``at`` seconds as a timestamp."""
    return BASE + timedelta(seconds=at)


@dataclass(frozen=True, slots=True)
class Stored:
    """A task row as stored: the modelled part and the lease owner the model ignores."""

    row: TaskRow
    lease_owner: str | None


def _stored(r: tuple[Any, ...]) -> tuple[int, Stored]:
    task_id, status, left, elapsed, n, finalized, blocked, token, owner = r
    row = TaskRow(TaskStatus(status), left, elapsed, n, finalized, blocked, token)
    return int(task_id), Stored(row, owner)


def read_rows_sync(conn: psycopg.Connection[Any]) -> dict[int, Stored]:
    """Every task row, by id (sync connection)."""
    return dict(_stored(r) for r in conn.execute(READ_ROWS, {"base": BASE}).fetchall())


async def read_rows(conn: psycopg.AsyncConnection[Any]) -> dict[int, Stored]:
    """Every task row, by id."""
    cur = await conn.execute(READ_ROWS, {"base": BASE})
    return dict(_stored(r) for r in await cur.fetchall())


async def pin_clock(conn: psycopg.AsyncConnection[Any], at: float) -> None:
    """Pin ``asynqpg_now()`` to ``instant(at)`` until the open transaction ends."""
    await conn.execute(PIN_CLOCK, {"at": instant(at)})


async def insert_row(conn: psycopg.AsyncConnection[Any], row: TaskRow) -> int:
    """Insert ``row`` (its messages are placeholders); return its id."""
    cur = await conn.execute(
        INSERT_ROW,
        {
            "type": TYPE,
            "status": row.status.value,
            "n": row.n_messages,
            "blocked": instant(row.blocked_till),
            "left": row.attempts_left,
            "elapsed": row.attempts_elapsed,
            "finalized": None if row.finalized_at is None else instant(row.finalized_at),
            "token": row.lease_token,
            "owner": None if row.lease_token is None else "someone",
        },
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


class FixedPolicy:
    """A retry policy with one delay for every attempt."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def next_retry(self, attempt: int) -> float:
        """Return the fixed delay."""
        return self.delay


class OneConnection:
    """Stands in for a `Pool`: lends the one connection it was given, inside its transaction."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Yield the connection (never closed or reset here)."""
        yield self._conn

    def as_pool(self) -> Pool:
        """This object, typed as the pool the janitor expects."""
        return cast("Pool", self)


def refusal_error(row: TaskRow | None) -> type[AsynqpgError]:
    """The client's error for an event the state table refuses on ``row``."""
    if row is None:
        return TaskNotFound
    if row.status is TaskStatus.RUNNING:
        return TaskRunning
    if row.status is TaskStatus.PENDING:
        return TaskAlreadyAvailable
    return TaskAlreadyFinalized


def outcome_for(event: Event, task_id: int, token: int, delay: float) -> Outcome:
    """The outcome a handler reports for ``event`` (release always has delay 0)."""
    kind = KIND_OF[event]
    message = f"{event.value} error" if kind in (OutcomeKind.FAIL, OutcomeKind.RETRY) else None
    if kind in (OutcomeKind.COMPLETE, OutcomeKind.FAIL, OutcomeKind.RELEASE):
        delay = 0.0
    return Outcome(task_id, token, kind, delay=delay, message=message)


async def claim(conn: psycopg.AsyncConnection[Any], n: int, lease: float) -> list[dict[str, Any]]:
    """Claim up to ``n`` due tasks of `TYPE` (and take over expired leases)."""
    return await claim_plan(conn, ClaimPlan.of({TYPE: n}), lease)


async def claim_plan(
    conn: psycopg.AsyncConnection[Any], plan: ClaimPlan, lease: float, owner: str = OWNER
) -> list[dict[str, Any]]:
    """Claim as ``plan`` says (and take over expired leases)."""
    rows = await repo.claim(
        conn,
        plan,
        owner=owner,
        lease=lease,
        takeover_message=TAKEOVER_MESSAGE,
        exhausted_message=EXHAUSTED_MESSAGE,
    )
    return [dict(zip(repo.CLAIM_COLUMNS, row, strict=True)) for row in rows]


async def next_ready_in(
    conn: psycopg.AsyncConnection[Any], pairs: Sequence[tuple[str, str]]
) -> float | None:
    """Seconds until the earliest task of these (queue, type) pairs is ready (the fetcher's)."""
    return await repo.next_ready_in(conn, pairs)


def plan(outcomes: Sequence[Outcome]) -> FlushPlan:
    """The flush plan the completer would write for these outcomes, reported in order."""
    batch = CompletionBatch(max_size=max(1, len(outcomes)), max_age=math.inf)
    for outcome in outcomes:
        batch.add(outcome, 0.0)
    return batch.take()


async def ack(conn: psycopg.AsyncConnection[Any], flush: FlushPlan) -> set[int]:
    """Write a flush plan as the completer does; return the ids written."""
    return await repo.write_outcomes(conn, flush)


async def extend(
    conn: psycopg.AsyncConnection[Any], task_id: int, token: int, lease: float
) -> set[int]:
    """Renew one lease; return the ids still held."""
    return await repo.extend_leases(conn, [task_id], [token], lease)


async def make_leader(conn: psycopg.AsyncConnection[Any]) -> None:
    """Make `JANITOR` the leader of `GROUP` for good, so the maintenance fence passes."""
    await conn.execute(MAKE_LEADER, {"group": GROUP, "me": JANITOR})


async def rescue(
    conn: psycopg.AsyncConnection[Any], delay: float, *, batch_size: int, max_batches: int
) -> RescueResult:
    """Run the janitor's rescue on this connection with a fixed back-off."""
    return await rescue_expired(
        PgMaintenance(OneConnection(conn).as_pool()),
        group=GROUP,
        me=JANITOR,
        policy=FixedPolicy(delay),
        batch_size=batch_size,
        max_batches=max_batches,
    )


async def clean(
    conn: psycopg.AsyncConnection[Any], retentions: Mapping[str, float], *, batch_size: int = 1000
) -> int:
    """Run the janitor's cleaner on this connection; return how many rows it deleted."""
    assert set(retentions) <= set(FINAL_STATUSES)
    return await clean_finalized(
        PgMaintenance(OneConnection(conn).as_pool()),
        group=GROUP,
        me=JANITOR,
        retentions=retentions,
        batch_size=batch_size,
        max_batches=1,
    )
