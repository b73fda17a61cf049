"""The SQL statements implement exactly the state table of ``asynqpg_trio/_core/_state.py``.

Three checks:

* Every statement that writes ``asynqpg_tasks`` names the events it implements on a
  ``-- events: a, b`` line, every event is named by at least one statement, and each event is
  exercised below through a statement that names it.
* The statuses the schema's CHECK constraint allows are exactly ``TaskStatus``.
* For every event and every representative row (each status; due, exactly due, not due;
  attempts left or not; a matching or a stale lease token; a running row without a token, as
  a Go consumer leaves it; a full message history; retention
  passed, exactly reached, not reached; no row at all) the production call for that event
  changes the row exactly as ``_state.apply`` says, or refuses (an error, or a no-op for
  fenced events) exactly when no rule matches.  A statement implementing two events (claim
  and lease_takeover) must do whichever of them the table accepts.  Each case runs in one
  rolled-back transaction with the database clock pinned (tests/helpers/state_db.py), so
  times are compared to the microsecond.

Changing a rule, a guard or an effect in the table makes a case here fail unless the SQL
changes with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import psycopg
import pytest

from asynqpg_trio import Client, Producer, Task, Unique, connect
from asynqpg_trio._core._errors import (
    AsynqpgError,
)
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._state import (
    TRANSITIONS,
    Event,
    TaskRow,
    TaskStatus,
    TransitionParams,
    apply,
    matching_rules,
)
from asynqpg_trio._maintenance._janitor import FINAL_STATUSES
from asynqpg_trio._pg import _claims as claims
from asynqpg_trio._pg import _tasks_repo as repo
from asynqpg_trio._pg._sql import parse
from tests.helpers import state_db as db

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

S, E = TaskStatus, Event
SQL_FILES: Final = ("tasks.sql", "client.sql", "maintenance.sql", "schema.sql")
_EVENTS_LINE = re.compile(r"^--\s*events:(.*)$", re.MULTILINE)
#: The columns a statement may write without an event: none of them is part of the state the
#: table models (a handler's progress, and whether someone waits for the task).  Such a
#: statement says "-- events: none".
_UNMODELLED: Final = frozenset({"progress", "progress_note", "progress_at", "notify_done"})
_SET_COLUMN = re.compile(r"(?:\bSET\b|,)\s*([a-z_]+)\s*=(?!=)", re.IGNORECASE)
_WRITES_TASKS = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+asynqpg_tasks\b", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One named SQL block: its file, the events it names, and whether it writes tasks."""

    file: str
    events: tuple[Event, ...]
    writes_tasks: bool
    #: The columns its SET clauses assign (for "-- events: none" statements).
    assigned: frozenset[str] = frozenset()
    unmodelled: bool = False


def statements() -> dict[str, Statement]:
    """Every named block of the SQL files, by name (names are unique across files)."""
    found: dict[str, Statement] = {}
    for filename in SQL_FILES:
        text = resources.files("asynqpg_trio._pg").joinpath("sql", filename).read_text("utf-8")
        for name, body in parse(text).items():
            lines = _EVENTS_LINE.findall(body)
            assert len(lines) <= 1, f"{name}: more than one events line"
            unmodelled = bool(lines) and lines[0].strip() == "none"
            events = (
                tuple(Event(e.strip()) for e in lines[0].split(","))
                if lines and not unmodelled
                else ()
            )
            code = "\n".join(ln for ln in body.splitlines() if not ln.lstrip().startswith("--"))
            assert name not in found, f"block {name} is defined in two files"
            assigned = frozenset(c.lower() for c in _SET_COLUMN.findall(code))
            found[name] = Statement(
                filename, events, bool(_WRITES_TASKS.search(code)), assigned, unmodelled
            )
    return found


# --- the events lines -----------------------------------------------------------------------


def test_every_statement_that_writes_tasks_names_its_events() -> None:
    for name, statement in statements().items():
        if statement.unmodelled:
            assert statement.writes_tasks, f"{name} says events: none but writes no task"
            assert statement.assigned, f"{name}: no SET clause found"
            assert statement.assigned <= _UNMODELLED, (
                f"{name} writes {sorted(statement.assigned - _UNMODELLED)}, which the state"
                f" table models: name its events"
            )
        elif statement.writes_tasks:
            assert statement.events, f"{name} writes asynqpg_tasks but names no events"
        else:
            assert not statement.events, f"{name} names events but writes no task"


def test_every_event_is_implemented_by_a_statement() -> None:
    named = {e for s in statements().values() for e in s.events}
    assert named == set(Event), f"no statement for {sorted(set(Event) - named)}"


# --- the schema ----------------------------------------------------------------------------


def test_claim_columns_name_what_the_claim_returns(sync_conn: psycopg.Connection[Any]) -> None:
    # The fetcher unpacks claimed rows by position: the names must follow the RETURNING list.
    with sync_conn.transaction(force_rollback=True):
        cur = sync_conn.cursor(binary=True)
        plan = ClaimPlan({("default", "x"): 1, ("mail", "x"): 1}, {"x": 1}, {})
        params = claims.claim_params(
            plan, owner="o", lease=1.0, takeover_message="t", exhausted_message="e"
        )
        assert claims.claim_statement(plan) == repo.QUERIES.claim_spread
        for statement in (repo.QUERIES.claim, repo.QUERIES.claim_spread):
            cur.execute(statement, params)
            assert cur.description is not None
            assert tuple(c.name for c in cur.description) == repo.CLAIM_COLUMNS


def test_schema_statuses_are_the_table_statuses(sync_conn: psycopg.Connection[Any]) -> None:
    rows = sync_conn.execute(
        """SELECT pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid = 'asynqpg_tasks'::regclass AND contype = 'c'"""
    ).fetchall()
    checks = [str(r[0]) for r in rows if "status" in str(r[0])]
    assert len(checks) == 1, checks
    allowed = set(re.findall(r"'([a-z_]+)'", checks[0]))
    assert allowed == {s.value for s in TaskStatus}
    in_table = {s for r in TRANSITIONS for s in (*r.sources, r.target) if s is not None}
    assert in_table == set(TaskStatus)


# --- the representative rows ---------------------------------------------------------------

DELAY, LEASE, RETENTION = 100.0, 300.0, 500.0
TOKEN, STALE = 10**12, 10**12 - 1  # far above what the token sequence hands out here
MISSING_ID: Final = 10**15
PARAMS: Final = TransitionParams(
    now=0.0, delay=DELAY, lease=LEASE, retention=RETENTION, max_retry=3
)


@dataclass(frozen=True, slots=True)
class Case:
    """A row before the event (None: no row) and the lease token the event carries."""

    row: TaskRow | None
    token: int | None = None


def cases() -> list[Case]:
    out = [Case(None)]
    for blocked in (-10.0, 0.0, 10.0):
        for left, elapsed in ((1, 2), (2, 0)):
            out.append(Case(TaskRow(S.PENDING, left, elapsed, 2, None, blocked, None)))
    for blocked in (-10.0, 0.0, 60.0):
        for left, elapsed in ((0, 3), (1, 1)):
            for token in (TOKEN, STALE):
                row = TaskRow(S.RUNNING, left, elapsed, 2, None, blocked, TOKEN)
                out.append(Case(row, token))
    for blocked in (-10.0, 0.0, 60.0):  # a Go consumer's claim: no token, attempt uncharged
        for left, elapsed in ((0, 0), (1, 2), (2, 1), (3, 0)):
            out.append(Case(TaskRow(S.RUNNING, left, elapsed, 2, None, blocked, None)))
    for blocked in (-10.0, 60.0):  # a full message history: the oldest message goes
        for left, elapsed in ((0, 3), (1, 1)):
            out.append(Case(TaskRow(S.RUNNING, left, elapsed, 100, None, blocked, TOKEN), TOKEN))
    for status in (S.COMPLETED, S.FAILED, S.CANCELLED):
        for finalized in (-2 * RETENTION, -RETENTION, -10.0):
            for left, elapsed in ((0, 3), (1, 2)):
                out.append(Case(TaskRow(status, left, elapsed, 2, finalized, -2000.0, None)))
    return out


# --- one production call per event ----------------------------------------------------------


@dataclass(slots=True)
class Result:
    """What the call reported: whether it acted on the row, the row id, a new lease token,
    and the error a client call raised."""

    acted: bool = False
    task_id: int | None = None
    new_token: int | None = None
    error: AsynqpgError | None = None


Conn = psycopg.AsyncConnection[Any]


async def _enqueue(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    producer = Producer("host=unused")  # a lazy pool, never opened: conn= is given
    new_id = await producer.enqueue(Task(db.TYPE, b"x", delay=DELAY, max_retry=3), conn=conn)
    await producer.aclose()
    return Result(acted=True, task_id=new_id)


async def _enqueue_unique(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    producer = Producer("host=unused")
    task = Task(db.TYPE, b"x", delay=DELAY, max_retry=3, unique=Unique(period=60))
    new_id = await producer.enqueue(task, conn=conn)
    await producer.aclose()
    return Result(acted=True, task_id=new_id)


async def _claim(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    mine = [r for r in await db.claim(conn, 10, LEASE) if r["id"] == task_id]
    return Result(acted=bool(mine), new_token=mine[0]["lease_token"] if mine else None)


async def _claim_spread(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    # The type served from two queues: the claim ranks candidates before it locks them.
    plan = ClaimPlan({("default", db.TYPE): 10, ("other", db.TYPE): 10}, {db.TYPE: 10}, {})
    mine = [r for r in await db.claim_plan(conn, plan, LEASE) if r["id"] == task_id]
    return Result(acted=bool(mine), new_token=mine[0]["lease_token"] if mine else None)


def _ack(event: Event) -> Callable[[Conn, Client, int, Case], Awaitable[Result]]:
    async def run(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
        token = -1 if case.token is None else case.token
        written = await db.ack(conn, db.plan([db.outcome_for(event, task_id, token, DELAY)]))
        return Result(acted=task_id in written)

    return run


async def _extend(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    token = -1 if case.token is None else case.token
    return Result(acted=task_id in await db.extend(conn, task_id, token, LEASE))


def _client(event: Event) -> Callable[[Conn, Client, int, Case], Awaitable[Result]]:
    async def run(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
        method = {
            E.CANCEL: client.cancel_task,
            E.MANUAL_RETRY: client.retry_task,
            E.DELETE: client.delete_task,
        }[event]
        try:
            await method(task_id, conn=conn)
        except AsynqpgError as ex:
            return Result(error=ex)
        return Result(acted=True)

    return run


async def _retry_failed(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    return Result(acted=await client.retry_failed(conn=conn) == 1)


async def _delete_failed(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    return Result(acted=await client.delete_failed(conn=conn) == 1)


async def _rescue(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    result = await db.rescue(conn, DELAY, batch_size=10, max_batches=1)
    return Result(acted=result.rescued + result.failed == 1)


async def _clean(conn: Conn, client: Client, task_id: int, case: Case) -> Result:
    deleted = await db.clean(conn, dict.fromkeys(FINAL_STATUSES, RETENTION))
    return Result(acted=deleted == 1)


@dataclass(frozen=True, slots=True)
class Impl:
    """How an event is done in production: the SQL block and the call.  ``refuses``: the
    call raises the client's error when the table refuses; ``only``: a bulk call's one status
    (rows in other statuses are left alone, without an error)."""

    event: Event
    statement: str
    run: Callable[[Conn, Client, int, Case], Awaitable[Result]]
    refuses: bool = False
    only: TaskStatus | None = None

    @property
    def id(self) -> str:
        return f"{self.event.value}:{self.statement}"


ACK_STATEMENTS: Final = {
    E.COMPLETE: "write_outcomes",
    E.FAIL: "write_outcomes",
    E.SKIP_RETRY: "write_outcomes",
    E.RETRY: "write_outcomes",
    E.SNOOZE_WITH_ERROR: "write_outcomes",
    E.SNOOZE: "write_outcomes",
    E.RELEASE: "write_outcomes",
}
IMPLS: Final = (
    Impl(E.ENQUEUE, "enqueue_many", _enqueue),
    Impl(E.ENQUEUE, "enqueue_many_unique", _enqueue_unique),
    Impl(E.CLAIM, "claim", _claim),
    Impl(E.LEASE_TAKEOVER, "claim", _claim),
    Impl(E.CLAIM, "claim_spread", _claim_spread),
    Impl(E.LEASE_TAKEOVER, "claim_spread", _claim_spread),
    *(Impl(e, s, _ack(e)) for e, s in ACK_STATEMENTS.items()),
    Impl(E.EXTEND_LEASE, "extend_leases", _extend),
    Impl(E.CANCEL, "cancel_task", _client(E.CANCEL), refuses=True),
    Impl(E.MANUAL_RETRY, "retry_task", _client(E.MANUAL_RETRY), refuses=True),
    Impl(E.DELETE, "delete_task", _client(E.DELETE), refuses=True),
    Impl(E.MANUAL_RETRY, "retry_failed_batch", _retry_failed, only=S.FAILED),
    Impl(E.DELETE, "delete_failed_batch", _delete_failed, only=S.FAILED),
    Impl(E.RESCUE, "update_rescued", _rescue),
    Impl(E.CLEAN, "clean", _clean),
)


def test_every_event_is_exercised_through_a_statement_that_names_it() -> None:
    named = statements()
    assert {impl.event for impl in IMPLS} == set(Event)
    for impl in IMPLS:
        assert impl.event in named[impl.statement].events, impl.id


class Rollback(Exception):
    """Ends a case's transaction without committing it."""


async def _raw(conn: Conn, task_id: int) -> tuple[Any, ...] | None:
    cur = await conn.execute("SELECT * FROM asynqpg_tasks WHERE id = %s", (task_id,))
    return await cur.fetchone()


async def check_case(conn: Conn, client: Client, impl: Impl, case: Case) -> None:
    """Run one case in a pinned, rolled-back transaction and compare with the table."""
    row = case.row
    params = replace(PARAMS, token=case.token)
    if impl.event is E.RESCUE and row is not None:
        params = replace(params, token=row.lease_token)  # the janitor fences with what it read
    # The statement's own event first, then the others it names (claim does lease_takeover
    # on a running row): it must do whichever the table accepts, or nothing.
    named = statements()[impl.statement].events
    candidates = [impl.event, *(e for e in named if e is not impl.event)]
    chosen = next((e for e in candidates if matching_rules(row, e, params)), None)
    if impl.only is not None and (row is None or row.status is not impl.only):
        chosen = None
    try:
        async with conn.transaction():
            await db.pin_clock(conn, 0.0)
            task_id = MISSING_ID if row is None else await db.insert_row(conn, row)
            before = await _raw(conn, task_id)
            result = await impl.run(conn, client, task_id, case)
            task_id = result.task_id or task_id
            after = (await db.read_rows(conn)).get(task_id)
            if chosen is None:
                assert not result.acted
                assert await _raw(conn, task_id) == before
                if impl.refuses:
                    assert type(result.error) is db.refusal_error(row)
            else:
                expected = apply(row, chosen, replace(params, new_token=result.new_token))
                assert result.acted
                assert result.error is None
                got = None if after is None else after.row
                assert got == expected, f"the SQL made {got}, the table says {expected}"
                if after is not None:
                    assert (after.lease_owner is not None) == (after.row.status is S.RUNNING)
                if chosen in (E.CLAIM, E.LEASE_TAKEOVER) and expected is not None:
                    assert expected.lease_token != TOKEN  # a fresh token (None if it failed)
            raise Rollback
    except Rollback:
        pass
    except AssertionError as ex:
        raise AssertionError(f"{impl.id} on {case} (table: {chosen})") from ex


@pytest.mark.parametrize("impl", IMPLS, ids=[impl.id for impl in IMPLS])
async def test_the_sql_does_what_the_table_says(dsn: str, impl: Impl) -> None:
    conn = await connect(dsn)
    client = Client(dsn)  # conn= is always given; its lazy pool never connects
    try:
        await db.make_leader(conn)
        for case in cases():
            if impl.event is E.ENQUEUE and case.row is not None:
                continue  # enqueue makes a new row; it never acts on an existing one
            await check_case(conn, client, impl, case)
    finally:
        await client.aclose()
        await conn.close()
