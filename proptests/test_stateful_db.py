"""A Hypothesis state machine that drives real PostgreSQL and checks it against the state table.

The steps are what producers, consumers, operators and the janitor do: enqueue (sync API, with
and without idempotency tokens and delays, into a few queues and types at random priorities),
claim with a lease (and so take over expired leases) as two consumers, each claim for a
random plan of (queue, type) pairs with random type and queue rooms, report outcomes through
the completer's batching and SQL (also with stale lease tokens), renew leases, cancel / retry
/ delete single tasks and failed tasks in bulk (`asynqpg_trio.Client`), pause and resume
queues, set and clear cluster-wide limits (max_running, a rate bucket, both), ask when the
next task is ready, rescue expired leases and clean old tasks (the janitor's functions), and
move the database clock.  Time never passes on its own: every step runs in one transaction
with ``asynqpg_now()`` pinned to the model's clock (tests/helpers/state_db.py), and the clock
moves only by the advance steps, sometimes exactly onto a deadline.

After every step the rows in PostgreSQL must equal the model's, which is computed with
``_state.apply`` alone.  The invariants check, besides: no task lost or invented; one row per
task, with a lease owner exactly while running and no two running tasks sharing a lease token;
no task completed twice; attempt accounting exact: attempts_left + attempts_elapsed equals the
task's budget (max_retry, raised only by a manual retry) and attempts_elapsed equals the claims
that started a run minus the snoozes and releases written.  After every step that writes
them (claim, pause or resume, set or clear a limit): the paused queues and the limits, buckets
included, are the model's, and no bucket is overdrawn.  Each claim must take exactly the rows
``tests/helpers/claim_model.py`` predicts (with their queue, type and priority), and besides:
nothing from a paused queue or a pair it did not ask for; within a pair, no due row left
behind that outranks one taken (priority, then blocked_till, then id); and no limit exceeded:
after a claim that started a task under a max_running limit, the limit's running tasks are at
most max_running, and a claim that started none under it never adds to them.

One database serves the whole run; each example starts from empty tables.  The async
API runs on one Trio event loop in a helper thread (anyio's blocking portal), so one async
connection serves every step; enqueue (the sync API) and the checks use a sync psycopg
connection.  Budgets per profile are in ``_BUDGETS``; on ``ci`` the run takes one to two minutes.
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
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._state import Event, TaskRow, TaskStatus, TransitionParams, apply
from asynqpg_trio._core._state import matching_rules as rules_for
from asynqpg_trio._maintenance._janitor import FINAL_STATUSES
from asynqpg_trio.sync import enqueue as sync_enqueue
from asynqpg_trio.sync import enqueue_many as sync_enqueue_many
from tests.helpers import state_db as db
from tests.helpers.claim_model import ModelLimit, Placement, in_scope, predict_claim, urgency

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
# Two queues, two types, a few priorities: enough tasks share a (queue, type) pair for the
# claim's order, rooms and limits to decide something.
QUEUES: Final = ("default", "mail")
TYPES: Final = (db.TYPE, "u")
PLACEMENTS = st.builds(
    Placement,
    queue=st.sampled_from(QUEUES),
    type=st.sampled_from(TYPES),
    priority=st.sampled_from([0, -5, 5, 0, 2]),
)
BATCHES = st.lists(st.tuples(DELAYS, MAX_RETRIES, PLACEMENTS), min_size=1, max_size=6)
SCOPES = st.sampled_from([("queue", q) for q in QUEUES] + [("type", t) for t in TYPES])
# (starts, per, burst): periods of 1, 2 or 4 s on a clock in whole seconds keep every bucket
# level a multiple of 1/4, exact in float8 as in Python.
RATES = st.none() | st.tuples(
    st.integers(1, 2), st.sampled_from([1.0, 2.0, 4.0]), st.integers(1, 3)
)
#: A limit: (max_running, (starts, per, burst)); None or (None, None): no limit.
LimitSpec = tuple[int | None, tuple[int, float, int] | None] | None
LIMITS = st.none() | st.tuples(st.none() | st.integers(0, 3), RATES)
OWNERS = st.sampled_from(["consumer-a", "consumer-b"])
# The strategies a claim plan draws from, made once (a strategy made per draw costs more
# than the draw).
SERVED_QUEUES = st.sampled_from([QUEUES, QUEUES[:1], QUEUES[1:]])
SERVED_TYPES = st.sampled_from([TYPES, TYPES[:1], TYPES[1:]])
PAIR_N = st.integers(1, 3)
TYPE_ROOM = st.integers(1, 4)
QUEUE_ROOM = st.none() | st.integers(1, 3)
#: Most claims take every priority; an urgent claim only the more urgent.
MIN_PRIORITY = st.sampled_from([-5, -5, -5, 0, 2, 5])


@st.composite
def claim_plans(draw: st.DrawFn) -> ClaimPlan:
    """A claim for some queues and types: each pair's number, each type's room, and rooms for
    some of the queues (not always within each other, as the fetcher's plans are)."""
    queues, types = draw(SERVED_QUEUES), draw(SERVED_TYPES)
    pairs = {(q, t): draw(PAIR_N) for q in queues for t in types}
    type_room = {t: draw(TYPE_ROOM) for t in types}
    queue_room = {q: n for q in queues if (n := draw(QUEUE_ROOM)) is not None}
    return ClaimPlan(pairs, type_room, queue_room, draw(MIN_PRIORITY))


#: In one round trip: the paused queues, and the limits (refilled_at in seconds since BASE).
#: (A task's queue, type and priority are not read back: every claim checks them.)
READ_QUEUES: Final = """
    SELECT
        (SELECT coalesce(array_agg(name), '{}') FROM asynqpg_queues WHERE paused),
        (SELECT coalesce(jsonb_agg(jsonb_build_array(
             scope, name, max_running, rate, period, burst, tokens,
             extract(epoch FROM refilled_at - %(base)s))), '[]')
         FROM asynqpg_limits)
"""


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
        self.where: dict[int, Placement] = {}
        self.paused: set[str] = set()
        self.limits: dict[tuple[str, str], ModelLimit] = {}
        env.sync.execute("DELETE FROM asynqpg_tasks")
        env.sync.execute("DELETE FROM asynqpg_queues")
        env.sync.execute("DELETE FROM asynqpg_limits")

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

    @initialize(target=tasks, batch=BATCHES)
    def enqueue_batch(self, batch: list[tuple[float, int | None, Placement]]) -> Any:
        """Start with a batch of token-less tasks, in one statement (sync enqueue_many)."""
        return self.enqueue_many(batch)

    @rule(target=tasks, batch=BATCHES)
    def enqueue_more(self, batch: list[tuple[float, int | None, Placement]]) -> Any:
        """Another batch (enough due tasks per pair for the claim order to matter)."""
        return self.enqueue_many(batch)

    def enqueue_many(self, batch: list[tuple[float, int | None, Placement]]) -> Any:
        tasks = [
            Task(p.type, b"x", delay=d, max_retry=m, queue=p.queue, priority=p.priority)
            for d, m, p in batch
        ]
        sync = self.env.sync
        with sync.transaction():
            sync.execute(db.PIN_CLOCK, {"at": db.instant(self.now)})
            ids = sync_enqueue_many(sync, tasks)
        new_ids = [i for i in ids if i is not None]
        assert len(new_ids) == len(ids)
        assert new_ids == sorted(new_ids), "ids follow the input order"
        for task_id, (delay, max_retry, where) in zip(new_ids, batch, strict=True):
            total = 3 if max_retry is None else max_retry
            params = self.params(delay=delay, max_retry=total)
            assert self.transition(task_id, E.ENQUEUE, params)
            self.idempotency[task_id] = None
            self.where[task_id] = where
            self.budget[task_id] = max(total, 1)
        return multiple(*new_ids)

    @rule(
        target=tasks,
        delay=DELAYS,
        max_retry=MAX_RETRIES,
        token=st.sampled_from([None, None, "a", "b"]),
        where=PLACEMENTS,
    )
    def enqueue(
        self, delay: float, max_retry: int | None, token: str | None, where: Placement
    ) -> Any:
        """One task through the sync API; a token its type holds makes it a duplicate."""
        holder = next(
            (
                i
                for i in self.model
                if token is not None
                and self.idempotency[i] == token
                and self.where[i].type == where.type
            ),
            None,
        )
        task = Task(
            where.type,
            b"x",
            idempotency_token=token,
            delay=delay,
            max_retry=max_retry,
            queue=where.queue,
            priority=where.priority,
        )
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
        self.where[task_id] = where
        self.budget[task_id] = max(total, 1)
        return task_id

    # --- consumer ----------------------------------------------------------------------

    def _with(self, *statuses: TaskStatus) -> bool:
        return any(row.status in statuses for row in self.model.values())

    @precondition(lambda self: self._with(S.PENDING, S.RUNNING))
    @rule(target=leases, plan=claim_plans(), lease=LEASES, owner=OWNERS)
    def claim(self, plan: ClaimPlan, lease: float, owner: str) -> Any:
        before = dict(self.model)
        predicted = predict_claim(
            self.model, self.where, plan, now=self.now, paused=self.paused, limits=self.limits
        )
        claimed = {r["id"]: r for r in self.run(lambda c: db.claim_plan(c, plan, lease, owner))}
        assert set(claimed) == set(predicted), f"claimed {sorted(claimed)}, not {predicted}"
        self.check_claim_order(plan, before, set(claimed))
        handed: list[Lease] = []
        for i in predicted:
            where = self.where[i]
            assert (claimed[i]["queue"], claimed[i]["type"]) == (where.queue, where.type)
            assert claimed[i]["priority"] == where.priority
            token = claimed[i]["lease_token"]
            event = E.CLAIM if self.model[i].status is S.PENDING else E.LEASE_TAKEOVER
            assert self.transition(i, event, self.params(new_token=token, lease=lease))
            if self.model[i].status is S.RUNNING:
                assert token not in self.issued, "a lease token handed out twice"
                self.issued.add(token)
                self.runs[i] += 1
                handed.append(Lease(i, token))
        started = [self.where[lease.task] for lease in handed]
        for key, limit in self.limits.items():
            in_it = sum(1 for where in started if in_scope(where, *key))
            if limit.rate is not None:
                limit.tokens -= in_it
            if limit.max_running is not None:
                after, earlier = self._running(key, self.model), self._running(key, before)
                if in_it:
                    assert after <= limit.max_running, f"{key}: {after} running"
                else:
                    assert after <= earlier, f"{key}: {earlier} -> {after} running"
        self.check_queues_and_limits()
        return multiple(*handed)

    def _running(self, key: tuple[str, str], rows: dict[int, TaskRow]) -> int:
        return sum(
            1
            for i, row in rows.items()
            if row.status is S.RUNNING and in_scope(self.where[i], *key)
        )

    def check_claim_order(
        self, plan: ClaimPlan, before: dict[int, TaskRow], claimed: set[int]
    ) -> None:
        """Whatever a claim took, it took from the pairs it asked for, none from a paused
        queue, and in each pair the most urgent due rows: no due row it left behind
        outranks one it took (none is locked here: one connection, one step at a time)."""
        for i in claimed:
            where = self.where[i]
            assert (where.queue, where.type) in plan.pairs, f"task {i} from {where}"
            assert where.queue not in self.paused, f"task {i} from paused {where.queue}"
        for queue, task_type in plan.pairs:
            due = [
                i
                for i, row in before.items()
                if (self.where[i].queue, self.where[i].type) == (queue, task_type)
                and row.status in (S.PENDING, S.RUNNING)
                and row.blocked_till <= self.now
            ]
            taken = [urgency(i, before[i], self.where[i]) for i in due if i in claimed]
            left = [urgency(i, before[i], self.where[i]) for i in due if i not in claimed]
            if taken and left:
                assert max(taken) < min(left), f"({queue}, {task_type}): {taken} vs {left}"

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

    @rule(queue=st.sampled_from(QUEUES), pause=st.booleans())
    def pause_or_resume(self, queue: str, pause: bool) -> None:
        client = self.env.client
        method = client.pause_queue if pause else client.resume_queue
        changed = self.run(lambda c: method(queue, conn=c))
        assert changed == ((queue in self.paused) != pause)
        if pause:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)
        self.check_queues_and_limits()

    @initialize(scope=SCOPES, limit=LIMITS)
    def start_with_a_limit(self, scope: tuple[str, str], limit: LimitSpec) -> None:
        """Often a limit from the start, so that many claims meet one."""
        self.set_or_clear_limit(scope, limit)

    @rule(scope=SCOPES, limit=LIMITS)
    def set_or_clear_limit(self, scope: tuple[str, str], limit: LimitSpec) -> None:
        """Set a limit (max_running, a rate, or both), or clear it (None, or neither)."""
        kind, name = scope
        if limit is None or limit == (None, None):
            existed = self.run(
                lambda c: self.env.client.clear_limit(
                    queue=name if kind == "queue" else None,
                    type=name if kind == "type" else None,
                    conn=c,
                )
            )
            assert existed == (self.limits.pop(scope, None) is not None)
            self.check_queues_and_limits()
            return
        max_running, rate = limit
        starts, per, burst = (None, 1.0, None) if rate is None else rate
        self.run(
            lambda c: self.env.client.set_limit(
                queue=name if kind == "queue" else None,
                type=name if kind == "type" else None,
                max_running=max_running,
                rate=starts,
                per=per,
                burst=burst,
                conn=c,
            )
        )
        self.limits[scope] = ModelLimit.new(max_running, rate, self.now)
        self.check_queues_and_limits()

    @rule(
        pairs=st.lists(
            st.tuples(st.sampled_from(QUEUES), st.sampled_from(TYPES)),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    def next_ready(self, pairs: list[tuple[str, str]]) -> None:
        """When the fetcher would wake: paused queues left out."""
        ready_in = self.run(lambda c: db.next_ready_in(c, pairs))
        times = [
            row.blocked_till
            for i, row in self.model.items()
            if (self.where[i].queue, self.where[i].type) in pairs
            and self.where[i].queue not in self.paused
            and row.status in (S.PENDING, S.RUNNING)
        ]
        assert ready_in == (min(times) - self.now if times else None)

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

    def check_queues_and_limits(self) -> None:
        """The paused queues and the limits, buckets included, are the model's; checked after
        the steps that write them (claim, pause or resume, set or clear a limit), not after
        every step: no other statement touches their tables, and the read would cost the
        run a tenth of its time."""
        found = self.env.sync.execute(READ_QUEUES, {"base": db.BASE}).fetchone()
        assert found is not None
        paused, limits = found
        assert set(paused) == self.paused
        assert {(scope, name): tuple(rest) for scope, name, *rest in limits} == {
            key: (m.max_running, m.rate, m.per, m.burst, m.tokens, m.refilled_at)
            for key, m in self.limits.items()
        }
        assert all(tokens >= 0 for *_, tokens, _ in limits), "a bucket overdrawn"


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
