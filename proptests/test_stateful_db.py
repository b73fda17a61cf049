"""A Hypothesis state machine that drives real PostgreSQL and checks it against the state table.

The steps are what producers, consumers, operators and the janitor do: enqueue (sync API, with
and without idempotency tokens and delays), claim with a lease (and so take over expired
leases), report outcomes through the completer's batching and SQL (also with stale lease
tokens), renew leases, cancel / retry / delete single tasks and failed tasks in bulk
(`asynqpg_trio.Client`), rescue expired leases and clean old tasks (the janitor's functions),
and move the database clock.  Time never passes on its own: every step runs in one transaction
with ``asynqpg_now()`` pinned to the model's clock (tests/helpers/state_db.py), and the clock
moves only by the advance steps, sometimes exactly onto a deadline.

After every step the rows in PostgreSQL must equal the model's, which is computed with
``_state.apply`` alone.  The invariants check, besides: no task lost or invented; one row per
task, with a lease owner exactly while running and no two running tasks sharing a lease token;
no task completed twice; attempt accounting exact: attempts_left + attempts_elapsed equals the
task's budget (max_retry, raised only by a manual retry) and attempts_elapsed equals the claims
that started a run minus the snoozes and releases written.

One database serves the whole run; each example starts from an empty task table.  The async
API runs on one Trio event loop in a helper thread (anyio's blocking portal), so one async
connection serves every step; enqueue (the sync API) and the checks use a sync psycopg
connection.  Budgets per profile are in ``_BUDGETS``; on ``ci`` the run takes about a minute.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from asynqpg_trio import Client, Task, connect
from asynqpg_trio._core._batching import OutcomeKind
from asynqpg_trio._core._errors import AsynqpgError, DuplicateTask, IllegalTransition
from asynqpg_trio._core._state import Event, TaskRow, TaskStatus, TransitionParams, apply
from asynqpg_trio._core._state import matching_rules as rules_for
from asynqpg_trio._maintenance._janitor import FINAL_STATUSES
from asynqpg_trio.sync import enqueue as sync_enqueue
from asynqpg_trio.sync import enqueue_many as sync_enqueue_many
from tests.helpers import state_db as db

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

S, E = TaskStatus, Event
T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

# (max_examples, stateful_step_count) per Hypothesis profile (proptests/conftest.py).
_BUDGETS: Final = {"dev": (40, 30), "ci": (1000, 50), "nightly": (10_000, 80)}
_EXAMPLES, _STEPS = _BUDGETS.get(os.environ.get("HYPOTHESIS_PROFILE", "dev"), _BUDGETS["dev"])
SETTINGS: Final = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=_STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Commits need not wait for the disk here: this database is thrown away after the run.
NO_FSYNC: Final = "-c synchronous_commit=off"

DELAYS = st.sampled_from([0.0, 1.0, 5.0, 30.0])
LEASES = st.sampled_from([5.0, 10.0, 30.0])
ADVANCES = st.sampled_from([1.0, 2.0, 5.0, 10.0, 30.0, 100.0])
MAX_RETRIES = st.sampled_from([None, 0, 1, 2, 3])


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim handed to the model consumer: the task and the lease token it ran under."""

    task: int
    token: int


@dataclass(frozen=True, slots=True)
class Env:
    """What outlives the examples: the event loop thread, the connections and the client."""

    portal: BlockingPortal
    conn: Conn
    sync: psycopg.Connection[Any]
    client: Client


class QueueMachine(RuleBasedStateMachine):
    """The queue as the table predicts it, next to the queue PostgreSQL holds."""

    tasks = Bundle("tasks")
    leases = Bundle("leases")

    def __init__(self, env: Env) -> None:
        super().__init__()
        self.env = env
        self.now = 0.0
        self.model: dict[int, TaskRow] = {}
        self.idempotency: dict[int, str | None] = {}
        self.issued: set[int] = set()  # every lease token handed out
        self.budget: dict[int, int] = {}
        self.runs: Counter[int] = Counter()  # claims that started a run
        self.refunds: Counter[int] = Counter()  # snoozes and releases written
        self.completions: Counter[int] = Counter()
        env.sync.execute("DELETE FROM asynqpg_tasks")

    def run(self, step: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``step`` on the event loop, in one transaction, at the model's clock."""
        conn = self.env.conn

        async def pinned() -> T:
            async with conn.transaction():
                await db.pin_clock(conn, self.now)
                return await step(conn)

        return self.env.portal.call(pinned)

    def params(self, **kwargs: Any) -> TransitionParams:
        return TransitionParams(now=self.now, **kwargs)

    def transition(self, task: int, event: Event, params: TransitionParams) -> bool:
        """Apply ``event`` to the model's row; return whether a rule matched."""
        row = self.model.get(task)
        if not rules_for(row, event, params):
            return False
        new = apply(row, event, params)
        if new is None:
            del self.model[task]
        else:
            self.model[task] = new
        return True

    # --- producer ----------------------------------------------------------------------

    @initialize(
        target=tasks,
        batch=st.lists(st.tuples(DELAYS, MAX_RETRIES), min_size=1, max_size=4),
    )
    def enqueue_batch(self, batch: list[tuple[float, int | None]]) -> Any:
        """Start with a batch of token-less tasks, in one statement (sync enqueue_many)."""
        tasks = [Task(db.TYPE, b"x", delay=d, max_retry=m) for d, m in batch]
        sync = self.env.sync
        with sync.transaction():
            sync.execute(db.PIN_CLOCK, {"at": db.instant(self.now)})
            ids = sync_enqueue_many(sync, tasks)
        new_ids = [i for i in ids if i is not None]
        assert len(new_ids) == len(ids)
        assert new_ids == sorted(new_ids), "ids follow the input order"
        for task_id, (delay, max_retry) in zip(new_ids, batch, strict=True):
            total = 3 if max_retry is None else max_retry
            params = self.params(delay=delay, max_retry=total)
            assert self.transition(task_id, E.ENQUEUE, params)
            self.idempotency[task_id] = None
            self.budget[task_id] = max(total, 1)
        return multiple(*new_ids)

    @rule(
        target=tasks,
        delay=DELAYS,
        max_retry=MAX_RETRIES,
        token=st.sampled_from([None, None, "a", "b"]),
    )
    def enqueue(self, delay: float, max_retry: int | None, token: str | None) -> Any:
        """One task through the sync API; a token in use makes it a duplicate."""
        holder = next(
            (i for i in self.model if token is not None and self.idempotency[i] == token), None
        )
        task = Task(db.TYPE, b"x", idempotency_token=token, delay=delay, max_retry=max_retry)
        sync = self.env.sync
        duplicate_of: int | None = None
        try:
            with sync.transaction():
                sync.execute(db.PIN_CLOCK, {"at": db.instant(self.now)})
                task_id = sync_enqueue(sync, task)
        except DuplicateTask as ex:
            duplicate_of = ex.existing_id
        assert duplicate_of == holder, f"token {token!r}: held by {holder}, not {duplicate_of}"
        if holder is not None:
            return multiple()
        assert task_id not in self.idempotency
        total = 3 if max_retry is None else max_retry  # the producer's default_max_retry
        assert self.transition(task_id, E.ENQUEUE, self.params(delay=delay, max_retry=total))
        self.idempotency[task_id] = token
        self.budget[task_id] = max(total, 1)
        return task_id

    # --- consumer ----------------------------------------------------------------------

    def _with(self, *statuses: TaskStatus) -> bool:
        return any(row.status in statuses for row in self.model.values())

    @precondition(lambda self: self._with(S.PENDING, S.RUNNING))
    @rule(target=leases, n=st.integers(1, 3), lease=LEASES)
    def claim(self, n: int, lease: float) -> Any:
        claimed = {r["id"]: r for r in self.run(lambda c: db.claim(c, n, lease))}
        ready = sorted(
            (row.blocked_till, i)
            for i, row in self.model.items()
            if row.status in (S.PENDING, S.RUNNING) and row.blocked_till <= self.now
        )[:n]
        assert set(claimed) == {i for _, i in ready}
        handed: list[Lease] = []
        for _, i in ready:
            token = claimed[i]["lease_token"]
            event = E.CLAIM if self.model[i].status is S.PENDING else E.LEASE_TAKEOVER
            assert self.transition(i, event, self.params(new_token=token, lease=lease))
            if self.model[i].status is S.RUNNING:
                assert token not in self.issued, "a lease token handed out twice"
                self.issued.add(token)
                self.runs[i] += 1
                handed.append(Lease(i, token))
        return multiple(*handed)

    @rule(
        reports=st.lists(
            st.tuples(leases, st.sampled_from(OutcomeKind), DELAYS), min_size=1, max_size=3
        )
    )
    def report(self, reports: list[tuple[Lease, OutcomeKind, float]]) -> None:
        """Handlers report outcomes (maybe under stale leases); the completer writes them."""
        outcomes = [
            db.outcome_for(db.EVENT_OF[kind], lease.task, lease.token, delay)
            for lease, kind, delay in reports
        ]
        flush = db.plan(outcomes)
        written = self.run(lambda c: db.ack(c, flush))
        expected: set[int] = set()
        for outcome in flush.outcomes:
            event = db.EVENT_OF[outcome.kind]
            params = self.params(token=outcome.lease_token, delay=outcome.delay)
            if self.transition(outcome.task_id, event, params):
                expected.add(outcome.task_id)
                if event in (E.SNOOZE, E.RELEASE):
                    self.refunds[outcome.task_id] += 1
                if self.model[outcome.task_id].status is S.COMPLETED:
                    self.completions[outcome.task_id] += 1
        assert written == expected

    @rule(lease=leases, seconds=LEASES)
    def extend_lease(self, lease: Lease, seconds: float) -> None:
        held = self.run(lambda c: db.extend(c, lease.task, lease.token, seconds))
        acted = self.transition(
            lease.task, E.EXTEND_LEASE, self.params(token=lease.token, lease=seconds)
        )
        assert held == ({lease.task} if acted else set())

    # --- operator ----------------------------------------------------------------------

    @rule(task=tasks, event=st.sampled_from([E.CANCEL, E.MANUAL_RETRY, E.DELETE]))
    def manage(self, task: int, event: Event) -> None:
        client = self.env.client
        method = {
            E.CANCEL: client.cancel_task,
            E.MANUAL_RETRY: client.retry_task,
            E.DELETE: client.delete_task,
        }[event]
        error: AsynqpgError | None = None
        try:
            self.run(lambda c: method(task, conn=c))
        except AsynqpgError as ex:
            error = ex
        row = self.model.get(task)
        try:
            apply(row, event, self.params())
        except IllegalTransition:
            assert type(error) is db.refusal_error(row)
            return
        assert error is None
        assert row is not None
        assert self.transition(task, event, self.params())
        if event is E.MANUAL_RETRY:
            self.budget[task] += self.model[task].attempts_left - row.attempts_left

    @precondition(lambda self: self._with(S.FAILED))
    @rule(event=st.sampled_from([E.MANUAL_RETRY, E.DELETE]))
    def manage_failed(self, event: Event) -> None:
        client = self.env.client
        bulk = client.retry_failed if event is E.MANUAL_RETRY else client.delete_failed
        count = self.run(lambda c: bulk(conn=c))
        failed = [i for i, row in self.model.items() if row.status is S.FAILED]
        assert count == len(failed)
        for i in failed:
            before = self.model[i]
            assert self.transition(i, event, self.params())
            if event is E.MANUAL_RETRY:
                self.budget[i] += self.model[i].attempts_left - before.attempts_left

    # --- janitor -----------------------------------------------------------------------

    @precondition(lambda self: self._with(S.RUNNING))
    @rule(delay=DELAYS, batch_size=st.integers(1, 3), max_batches=st.integers(1, 2))
    def rescue(self, delay: float, batch_size: int, max_batches: int) -> None:
        result = self.run(
            lambda c: db.rescue(c, delay, batch_size=batch_size, max_batches=max_batches)
        )
        expired = sorted(
            (row.blocked_till, i)
            for i, row in self.model.items()
            if row.status is S.RUNNING and row.blocked_till <= self.now
        )[: batch_size * max_batches]
        outcome: Counter[TaskStatus] = Counter()
        for _, i in expired:
            params = self.params(token=self.model[i].lease_token, delay=delay)
            assert self.transition(i, E.RESCUE, params)
            outcome[self.model[i].status] += 1
        assert (result.rescued, result.failed) == (outcome[S.PENDING], outcome[S.FAILED])

    @precondition(lambda self: self._with(S.COMPLETED, S.FAILED, S.CANCELLED))
    @rule(
        statuses=st.sets(st.sampled_from(FINAL_STATUSES), min_size=1),
        retention=st.sampled_from([0.0, 5.0, 60.0]),
    )
    def clean(self, statuses: set[str], retention: float) -> None:
        deleted = self.run(lambda c: db.clean(c, dict.fromkeys(sorted(statuses), retention)))
        params = self.params(retention=retention)
        doomed = [
            i
            for i, row in self.model.items()
            if row.status.value in statuses and rules_for(row, E.CLEAN, params)
        ]
        assert deleted == len(doomed)
        for i in doomed:
            assert self.transition(i, E.CLEAN, params)

    # --- the clock ---------------------------------------------------------------------

    @rule(seconds=ADVANCES)
    def advance(self, seconds: float) -> None:
        self.now += seconds

    def _deadlines(self) -> list[float]:
        return [
            row.blocked_till
            for row in self.model.values()
            if row.status in (S.PENDING, S.RUNNING) and row.blocked_till > self.now
        ]

    @precondition(lambda self: bool(self._deadlines()))
    @rule()
    def advance_to_next_deadline(self) -> None:
        """Move the clock exactly onto the next due time or lease expiry (the edge case)."""
        self.now = min(self._deadlines())

    # --- after every step --------------------------------------------------------------

    @invariant()
    def database_matches_the_model(self) -> None:
        stored = db.read_rows_sync(self.env.sync)
        assert set(stored) == set(self.model), "a task was lost or invented"
        tokens = [s.row.lease_token for s in stored.values() if s.row.lease_token is not None]
        assert len(tokens) == len(set(tokens)), "two tasks share a lease"
        for i, s in stored.items():
            assert s.row == self.model[i], f"task {i}"
            assert (s.lease_owner is not None) == (s.row.status is S.RUNNING)
            assert s.row.attempts_left + s.row.attempts_elapsed == self.budget[i]
            assert s.row.attempts_elapsed == self.runs[i] - self.refunds[i]
            assert self.completions[i] <= 1, f"task {i} completed twice"


def test_the_database_follows_the_state_table(dsn: str) -> None:
    with (
        start_blocking_portal("trio") as portal,
        psycopg.connect(dsn, autocommit=True, options=NO_FSYNC) as sync,
    ):
        conn = portal.call(partial(connect, dsn, options=NO_FSYNC))
        client = Client(dsn)  # every call passes conn=; its lazy pool never connects
        try:
            portal.call(db.make_leader, conn)
            env = Env(portal, conn, sync, client)

            class OnThisDatabase(QueueMachine):
                def __init__(self) -> None:
                    super().__init__(env)

            run_state_machine_as_test(OnThisDatabase, settings=SETTINGS)
        finally:
            portal.call(client.aclose)
            portal.call(conn.close)
