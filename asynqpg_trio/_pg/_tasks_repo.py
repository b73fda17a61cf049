"""The queue's SQL, loaded once, and the statements the producer and consumer run.

Every query lives in ``_pg/sql/tasks.sql``; this module only binds parameters and turns rows into
frozen values (`_core._rows`).  One function per query; each takes the connection to run on, so
callers decide about pools and transactions.  `PgTasks` is the consumer's side of it: the
`TasksRepository` its actors use, each method on a connection of its own from the pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import psycopg

from .._core._batching import FlushPlan, Outcome, OutcomeKind
from .._core._enqueue import BatchPlan
from .._core._inserted import Holder, Inserted, read_result
from .._core._pacing import ClaimPlan
from .._core._progress import Progress
from .._core._rows import ClaimedTask, LostLease, Notice, QueueDepth
from .._core._task import DEFAULT_QUEUE
from ._claims import claim_params, claim_statement
from ._migrate import schema_required
from ._sql import load

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["CLAIM_COLUMNS", "QUERIES", "LostLease", "PgTasks", "TaskQueries"]


@dataclass(frozen=True, slots=True)
class TaskQueries:
    """The statements of ``_pg/sql/tasks.sql``, one attribute per named block."""

    enqueue_many: str
    enqueue_many_untokened: str
    find_by_token: str
    enqueue_many_unique: str
    find_by_unique_key: str
    claim: str
    claim_spread: str
    bound_idle_in_transaction: str
    write_outcomes: str
    extend_leases: str
    write_progress: str
    lost_leases: str
    next_ready_at: str
    queue_depth: str
    listen_new: str
    listen_cancel: str


#: The loaded task statements.
QUERIES: TaskQueries = load(TaskQueries, "tasks.sql")


def enqueue_statement(plan: BatchPlan) -> str:
    """The batch insert to use: with the unique columns when a task is unique, else without
    ON CONFLICT when no task carries a token."""
    if plan.unique_keys is not None:
        return QUERIES.enqueue_many_unique
    return QUERIES.enqueue_many_untokened if plan.keys is None else QUERIES.enqueue_many


def holder_query(holder: Holder) -> tuple[str, dict[str, Any]]:
    """The statement and parameters that find the id of the task ``holder`` describes."""
    if holder.token is not None:
        return QUERIES.find_by_token, {"type": holder.task_type, "token": holder.token}
    params = {"type": holder.task_type, "key": holder.unique_key, "window": holder.window}
    return QUERIES.find_by_unique_key, params


async def insert_batch(conn: psycopg.AsyncConnection[Any], plan: BatchPlan) -> Inserted:
    """Run the batch insert; return the new ids, one entry per input.

    Raises:
        SchemaMissing: the database has no asynqpg schema.
    """
    cur = conn.cursor(binary=True)
    with schema_required():
        await cur.execute(enqueue_statement(plan), plan.params)
    return read_result(plan, await cur.fetchall())


async def find_holder(conn: psycopg.AsyncConnection[Any], holder: Holder) -> int | None:
    """The id of the task holding a skipped task's token or unique slot, if any (still)."""
    query, params = holder_query(holder)
    cur = await conn.cursor(binary=True).execute(query, params)
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def claim(
    conn: psycopg.AsyncConnection[Any],
    plan: ClaimPlan,
    *,
    owner: str,
    lease: float,
    takeover_message: str,
    exhausted_message: str,
) -> list[ClaimedTask]:
    """Claim ready tasks as ``plan`` says; return the claimed rows.

    Binary results (no text parsing), each row made a `ClaimedTask` by a tuple copy.
    """
    cur = conn.cursor(binary=True)
    await cur.execute(
        claim_statement(plan),
        claim_params(
            plan,
            owner=owner,
            lease=lease,
            takeover_message=takeover_message,
            exhausted_message=exhausted_message,
        ),
    )
    return list(map(ClaimedTask._make, await cur.fetchall()))


#: The claim's RETURNING list, in order: the fields of each row `claim` returns.
CLAIM_COLUMNS = ClaimedTask._fields


async def next_ready_in(
    conn: psycopg.AsyncConnection[Any], pairs: Sequence[tuple[str, str]]
) -> float | None:
    """Seconds until the earliest task of these (queue, type) pairs is ready (None if none)."""
    params = {"queues": [q for q, _ in pairs], "types": [t for _, t in pairs]}
    cur = await conn.execute(QUERIES.next_ready_at, params)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


@asynccontextmanager
async def bounded_transaction(
    conn: psycopg.AsyncConnection[Any], idle_timeout: float | None
) -> AsyncIterator[None]:
    """A transaction the server ends (releasing its row locks) if this client stays silent in
    it for longer than ``idle_timeout`` seconds; None for no bound.

    A stalled client must not keep rows locked, and so safe from takeover, after its leases
    expired.  The server then terminates the session; that surfaces here as
    `psycopg.OperationalError`, the connection-loss error actors already survive.
    """
    try:
        async with conn.transaction():
            if idle_timeout is not None:
                timeout = f"{max(1, round(idle_timeout * 1000))}ms"
                await conn.execute(QUERIES.bound_idle_in_transaction, {"timeout": timeout})
            yield
    except psycopg.errors.IdleInTransactionSessionTimeout as ex:
        raise psycopg.OperationalError(f"the server ended a stalled transaction: {ex}") from ex


async def write_outcomes(conn: psycopg.AsyncConnection[Any], plan: FlushPlan) -> set[int]:
    """Write a flush plan, all kinds in one autocommit statement; return the ids written.

    The statement locks its rows in id order before it writes them, so it never deadlocks
    with a lease renewal, and holds them only while it runs (see write_outcomes in tasks.sql).
    """
    outcomes = plan.outcomes
    ids = [o.task_id for o in outcomes]
    params = {
        "ids": ids,
        "tokens": [o.lease_token for o in outcomes],
        "kinds": [_KIND_CODES[o.kind] for o in outcomes],
        "delays": [float(o.delay) for o in outcomes],
        "messages": [o.message for o in outcomes],
        **_extra_params(outcomes),
    }
    cur = await conn.execute(QUERIES.write_outcomes, params)
    row = await cur.fetchone()  # (stale ids or NULL, NOTIFYs sent)
    stale = set() if row is None or row[0] is None else {int(i) for i in row[0]}
    return set(ids) - stale if stale else set(ids)


#: The outcome statement's kind codes (see write_outcomes in tasks.sql).
_KIND_CODES: dict[OutcomeKind, int] = {
    OutcomeKind.COMPLETE: 0,
    OutcomeKind.FAIL: 1,
    OutcomeKind.RETRY: 2,
    OutcomeKind.SNOOZE: 3,
    OutcomeKind.RELEASE: 3,
}


def _extra_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any] | None]:
    """write_outcomes's result and progress arrays, only when some outcome has one (NULL
    arrays otherwise, which cost nothing to bind)."""
    if all(o.result is None and o.progress is None for o in outcomes):
        return {"results": None, "codecs": None, "progress": None, "notes": None}
    return {
        "results": [o.result for o in outcomes],
        "codecs": [o.codec for o in outcomes],
        "progress": [None if o.progress is None else float(o.progress.fraction) for o in outcomes],
        "notes": [None if o.progress is None else o.progress.note for o in outcomes],
    }


async def write_progress(
    conn: psycopg.AsyncConnection[Any], reports: Sequence[tuple[int, int, Progress]]
) -> set[int]:
    """Write the latest progress of running tasks, fenced by lease; return the ids written."""
    params = {
        "ids": [task_id for task_id, _, _ in reports],
        "tokens": [token for _, token, _ in reports],
        "progress": [float(p.fraction) for _, _, p in reports],
        "notes": [p.note for _, _, p in reports],
    }
    cur = await conn.execute(QUERIES.write_progress, params)
    return {int(r[0]) for r in await cur.fetchall()}


async def extend_leases(
    conn: psycopg.AsyncConnection[Any], ids: list[int], tokens: list[int], lease: float
) -> set[int]:
    """Push the leases forward; return the ids still held."""
    cur = await conn.execute(QUERIES.extend_leases, {"ids": ids, "tokens": tokens, "lease": lease})
    return {int(r[0]) for r in await cur.fetchall()}


async def lost_leases(
    conn: psycopg.AsyncConnection[Any], ids: list[int], tokens: list[int]
) -> list[LostLease]:
    """Of these leases, those no longer held (cancelled, taken over, rescued, deleted)."""
    cur = await conn.execute(QUERIES.lost_leases, {"ids": ids, "tokens": tokens})
    return [LostLease(int(i), status, owner) for i, status, owner in await cur.fetchall()]


async def queue_depth(
    conn: psycopg.AsyncConnection[Any], types: Sequence[str], queues: Sequence[str]
) -> list[QueueDepth]:
    """Per type: pending tasks ready now, and seconds the oldest of them has been ready."""
    cur = await conn.execute(QUERIES.queue_depth, {"types": list(types), "queues": list(queues)})
    return [QueueDepth(str(t), int(n), float(age)) for t, n, age in await cur.fetchall()]


@dataclass(frozen=True, slots=True, eq=False)
class PgTasks:
    """The consumer's tasks repository on a pool (a `TasksRepository`): each method checks
    out a connection of its own for its statements.

    Cancellation: every method is a checkpoint while it waits for a connection; what the
    database holds when one is cancelled is what its statement had committed (`claim` keeps
    its statement, once sent, shielded for its ``grace``).
    """

    pool: Pool

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
        """`claim` on a pooled connection; the checkout stays cancellable, the statement is
        shielded for up to ``grace`` seconds once sent."""
        rows: list[ClaimedTask] = []
        async with self.pool.connection() as conn:
            # Once the server has committed a claim its tasks are leased to us, so the reply
            # must come back; cancelled while it was on its way, the claim would be lost and
            # its tasks left running until their leases expired, each an attempt poorer.
            with anyio.move_on_after(grace, shield=True):
                rows = await claim(
                    conn,
                    plan,
                    owner=owner,
                    lease=lease,
                    takeover_message=takeover_message,
                    exhausted_message=exhausted_message,
                )
        return rows

    async def next_ready_in(self, pairs: Sequence[tuple[str, str]]) -> float | None:
        """`next_ready_in` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await next_ready_in(conn, pairs)

    async def write_outcomes(self, plan: FlushPlan) -> set[int]:
        """`write_outcomes` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await write_outcomes(conn, plan)

    async def write_progress(self, reports: Sequence[tuple[int, int, Progress]]) -> set[int]:
        """`write_progress` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await write_progress(conn, reports)

    async def extend_leases(self, ids: list[int], tokens: list[int], lease: float) -> set[int]:
        """`extend_leases` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await extend_leases(conn, ids, tokens, lease)

    async def lost_leases(self, ids: list[int], tokens: list[int]) -> list[LostLease]:
        """`lost_leases` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await lost_leases(conn, ids, tokens)

    async def queue_depth(
        self, types: Sequence[str], queues: Sequence[str] = (DEFAULT_QUEUE,)
    ) -> list[QueueDepth]:
        """`queue_depth` on a pooled connection."""
        async with self.pool.connection() as conn:
            return await queue_depth(conn, types, queues)

    @asynccontextmanager
    async def notifications(self) -> AsyncIterator[PgListening | _Silence]:
        """A dedicated connection (outside the pool) LISTENing on ``asynqpg_new`` and
        ``asynqpg_cancel``; entered once LISTEN is in effect, closed on exit.

        Poll-only behind a transaction pooler without a direct DSN (`Pool.has_session` is
        False): no connection, and an iterator that never yields (the fetcher polls, the
        lease keeper's periodic check catches remote cancels)."""
        if not self.pool.has_session:
            yield _Silence()
            return
        conn = await self.pool.connect()
        try:
            await conn.execute(QUERIES.listen_new)
            await conn.execute(QUERIES.listen_cancel)
            yield PgListening(conn)
        finally:
            await conn.close()


class PgListening:
    """The LISTEN connection (a `Listening`): notices one at a time, claims in between.

    psycopg's ``notifies()`` holds the connection's lock while it is iterated, so each notice
    is read by a generator of its own, run to its end (and closed) in the task that asked:
    between two, the connection is free for a claim, and notices arriving during the claim
    wait in psycopg's backlog for the next read.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._heard: deque[Notice] = deque()

    def __aiter__(self) -> PgListening:
        """This object: it is its own iterator."""
        return self

    async def __anext__(self) -> Notice:
        """The next notice.  Cancellation: a checkpoint; nothing is lost (psycopg keeps the
        notices it read and this object those it has not handed out)."""
        while not self._heard:
            async with aclosing(self._conn.notifies(stop_after=1)) as notes:
                async for note in notes:
                    self._heard.append(Notice(note.channel, note.payload))
        return self._heard.popleft()

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
        """`claim` on the LISTEN connection; shielded for up to ``grace`` seconds (see
        `PgTasks.claim`)."""
        with anyio.move_on_after(grace, shield=True):
            return await claim(
                self._conn,
                plan,
                owner=owner,
                lease=lease,
                takeover_message=takeover_message,
                exhausted_message=exhausted_message,
            )
        return []  # the grace ran out: whatever it claimed is left to the janitor


class _Silence:
    """The `Listening` of a consumer that cannot LISTEN (poll-only behind a transaction
    pooler): no notice, ever, so the listener never claims on it either."""

    def __aiter__(self) -> _Silence:
        """This object: it is its own iterator."""
        return self

    async def __anext__(self) -> Notice:
        """Never returns.  Cancellation: a checkpoint."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

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
        """Nothing: a consumer without a LISTEN connection claims through the fetcher."""
        await anyio.lowlevel.checkpoint()
        return []
