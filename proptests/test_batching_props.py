"""Properties of completion batching (asynqpg_trio._core._batching).

A rule-based state machine interleaves adds, clock ticks, flush checks, takes, and the
two fates of a taken plan (written, or requeued after a failed write), and compares the
batch with a dict model after every step. At teardown it checks the delivery promise
on the raw history, independently of the model: every outcome written at most once,
and every outcome never written was superseded by a written one for the same task.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from asynqpg_trio._core._batching import CompletionBatch, FlushPlan, Outcome, OutcomeKind

Entry = tuple[Outcome, float, int]  # outcome, pending since, arrival index


def check_plan_shape(plan: FlushPlan, max_size: int) -> None:
    """The per-kind arrays are a faithful regrouping of the plan's outcomes."""
    assert len(plan) <= max_size
    assert len(plan.added_at) == len(plan.arrivals) == len(plan.outcomes)
    ids = [o.task_id for o in plan.outcomes]
    assert len(set(ids)) == len(ids)
    assert [b.kind for b in plan.batches] == [k for k in OutcomeKind if plan.batch(k)]
    for kind in OutcomeKind:
        group = [o for o in plan.outcomes if o.kind is kind]
        batch = plan.batch(kind)
        assert batch.kind is kind
        assert batch.ids == tuple(o.task_id for o in group)
        assert batch.tokens == tuple(o.lease_token for o in group)
        assert batch.delays == tuple(o.delay for o in group)
        assert batch.messages == tuple(o.message for o in group)


class BatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.batch = CompletionBatch(max_size=1, max_age=0.0)
        self.now = 0.0
        self.model: dict[int, Entry] = {}
        self.added: list[Outcome] = []
        self.in_flight: list[FlushPlan] = []
        self.written: list[Outcome] = []

    @initialize(
        max_size=st.integers(1, 5),
        max_age=st.sampled_from([0.0, 1.0, 2.5, math.inf]),
    )
    def configure(self, max_size: int, max_age: float) -> None:
        self.batch = CompletionBatch(max_size=max_size, max_age=max_age)

    @rule(
        task_id=st.integers(0, 3),
        token=st.integers(0, 2),
        kind=st.sampled_from(OutcomeKind),
        delay=st.sampled_from([0.0, 1.5, 60.0]),
        message=st.none() | st.text(max_size=3),
    )
    def add(
        self, task_id: int, token: int, kind: OutcomeKind, delay: float, message: str | None
    ) -> None:
        outcome = Outcome(task_id, token, kind, delay, message)
        self.batch.add(outcome, self.now)
        self.added.append(outcome)
        self.merge((outcome, self.now, len(self.added) - 1))

    def merge(self, entry: Entry) -> None:
        """The documented rule: newer token, then later arrival, wins; oldest age kept."""
        outcome, since, _ = entry
        current = self.model.get(outcome.task_id)
        if current is None:
            self.model[outcome.task_id] = entry
            return
        winner = max(entry, current, key=lambda e: (e[0].lease_token, e[2]))
        self.model[outcome.task_id] = (winner[0], min(since, current[1]), winner[2])

    @rule(dt=st.sampled_from([0.0, 0.25, 1.0, 3.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def should_flush(self) -> None:
        oldest = min((t for _, t, _ in self.model.values()), default=math.inf)
        expected = len(self.model) >= self.batch.max_size or self.now >= oldest + self.batch.max_age
        assert self.batch.should_flush(self.now) == expected

    @rule()
    def take(self) -> None:
        expected_size = min(len(self.model), self.batch.max_size)
        plan = self.batch.take()
        check_plan_shape(plan, self.batch.max_size)
        assert len(plan) == expected_size
        for outcome, added_at in zip(plan.outcomes, plan.added_at, strict=True):
            modelled, modelled_at, _ = self.model.pop(outcome.task_id)
            assert modelled is outcome
            assert modelled_at == added_at
        if plan.added_at and self.model:  # oldest first
            assert max(plan.added_at) <= min(t for _, t, _ in self.model.values())
        self.in_flight.append(plan)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def write_succeeds(self, data: st.DataObject) -> None:
        plan = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        self.written.extend(plan.outcomes)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def write_fails_and_requeues(self, data: st.DataObject) -> None:
        plan = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        self.batch.requeue(plan)
        arrival = {id(o): i for i, o in enumerate(self.added)}
        for outcome, added_at in zip(plan.outcomes, plan.added_at, strict=True):
            self.merge((outcome, added_at, arrival[id(outcome)]))

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.batch) == len(self.model)
        if self.model:
            oldest = min(t for _, t, _ in self.model.values())
            assert self.batch.deadline() == oldest + self.batch.max_age
        else:
            assert self.batch.deadline() is None

    def teardown(self) -> None:
        for plan in self.in_flight:
            self.written.extend(plan.outcomes)
        while len(self.batch):
            plan = self.batch.take()
            check_plan_shape(plan, self.batch.max_size)
            assert plan.outcomes
            self.written.extend(plan.outcomes)
        assert len(self.batch.take()) == 0
        written_ids = [id(o) for o in self.written]
        assert len(set(written_ids)) == len(written_ids), "an outcome was written twice"
        added_ids = {id(o): i for i, o in enumerate(self.added)}
        assert set(written_ids) <= set(added_ids)
        for index, outcome in enumerate(self.added):
            if id(outcome) in set(written_ids):
                continue
            # Dropped: it must have been superseded by a written outcome for its task.
            assert any(
                w.task_id == outcome.task_id
                and (
                    w.lease_token > outcome.lease_token
                    or (w.lease_token == outcome.lease_token and added_ids[id(w)] > index)
                )
                for w in self.written
            ), f"{outcome} was dropped"


TestCompletionBatch = BatchMachine.TestCase


# --- targeted properties and examples -------------------------------------------------

DISTINCT_OUTCOMES = st.lists(st.integers(0, 10_000), unique=True, max_size=30).map(
    lambda ids: [Outcome(i, i % 7, OutcomeKind.COMPLETE) for i in ids]
)


@given(DISTINCT_OUTCOMES, st.integers(1, 8), st.data())
def test_requeue_preserves_everything_in_order(
    outcomes: list[Outcome], max_size: int, data: st.DataObject
) -> None:
    batch = CompletionBatch(max_size=max_size, max_age=10.0)
    for t, outcome in enumerate(outcomes):
        batch.add(outcome, float(t))
    plans = [batch.take() for _ in range(data.draw(st.integers(0, 5)))]
    for plan in data.draw(st.permutations(plans)):
        batch.requeue(plan)
    drained: list[Outcome] = []
    while len(batch):
        plan = batch.take()
        assert 0 < len(plan) <= max_size
        drained.extend(plan.outcomes)
    assert drained == outcomes


@given(st.integers(1, 20), st.integers(0, 60))
def test_size_trigger(max_size: int, count: int) -> None:
    batch = CompletionBatch(max_size=max_size, max_age=math.inf)
    for i in range(count):
        batch.add(Outcome(i, 1, OutcomeKind.COMPLETE), 0.0)
    assert batch.should_flush(0.0) == (count >= max_size)
    assert batch.deadline() == (math.inf if count else None)
    assert len(batch.take()) == min(count, max_size)
    assert len(batch) == max(count - max_size, 0)


@given(st.floats(0.0, 100.0), st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_age_trigger(start: float, max_age: float, later: float) -> None:
    batch = CompletionBatch(max_size=100, max_age=max_age)
    assert not batch.should_flush(start)
    batch.add(Outcome(1, 1, OutcomeKind.FAIL, message="boom"), start)
    batch.add(Outcome(2, 1, OutcomeKind.FAIL, message="boom"), start + later)
    assert batch.deadline() == start + max_age
    assert batch.should_flush(start + later) == (start + later >= start + max_age)


def test_same_task_last_report_wins_but_stale_lease_loses() -> None:
    batch = CompletionBatch(max_size=10, max_age=1.0)
    batch.add(Outcome(1, 5, OutcomeKind.RETRY, 3.0, "first"), 0.0)
    batch.add(Outcome(2, 5, OutcomeKind.COMPLETE), 0.5)
    batch.add(Outcome(1, 5, OutcomeKind.FAIL, message="second"), 0.7)  # same lease: replaces
    batch.add(Outcome(1, 4, OutcomeKind.COMPLETE), 0.8)  # older lease: ignored
    assert batch.deadline() == 1.0  # the replacement keeps the slot's age
    plan = batch.take()
    assert [o.task_id for o in plan.outcomes] == [1, 2]
    assert plan.batch(OutcomeKind.FAIL).messages == ("second",)
    assert plan.batch(OutcomeKind.RETRY).ids == ()


def test_requeue_does_not_override_a_newer_report() -> None:
    batch = CompletionBatch(max_size=10, max_age=1.0)
    batch.add(Outcome(1, 5, OutcomeKind.RETRY, 3.0, "old"), 0.0)
    batch.add(Outcome(2, 5, OutcomeKind.COMPLETE), 0.0)
    plan = batch.take()
    newer = Outcome(1, 6, OutcomeKind.COMPLETE)
    batch.add(newer, 2.0)
    batch.requeue(plan)
    batch.requeue(plan)  # twice: harmless
    again = batch.take()
    assert [o.task_id for o in again.outcomes] == [1, 2]
    assert again.outcomes[0] is newer  # which keeps the older report's age
    assert again.added_at == (0.0, 0.0)


def test_requeue_in_take_order_keeps_the_later_report() -> None:
    batch = CompletionBatch(max_size=1, max_age=1.0)
    first, second = Outcome(1, 3, OutcomeKind.RETRY, 1.0, "a"), Outcome(1, 3, OutcomeKind.FAIL)
    batch.add(first, 0.0)
    older = batch.take()
    batch.add(second, 1.0)
    newer = batch.take()
    batch.requeue(older)
    batch.requeue(newer)
    assert batch.take().outcomes == (second,)
    assert len(batch) == 0


def test_a_requeued_winner_keeps_the_older_age() -> None:
    batch = CompletionBatch(max_size=1, max_age=1.0)
    batch.add(Outcome(1, 1, OutcomeKind.COMPLETE), 0.0)
    old_lease = batch.take()
    new_lease_outcome = Outcome(1, 2, OutcomeKind.COMPLETE)
    batch.add(new_lease_outcome, 5.0)
    new_lease = batch.take()
    batch.requeue(old_lease)
    batch.requeue(new_lease)
    assert batch.deadline() == 1.0
    assert batch.take().outcomes == (new_lease_outcome,)


@pytest.mark.parametrize(("max_size", "max_age"), [(0, 1.0), (-1, 1.0), (1, -0.5), (1, math.nan)])
def test_batch_rejects_bad_limits(max_size: int, max_age: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        CompletionBatch(max_size=max_size, max_age=max_age)


@pytest.mark.parametrize("delay", [-1.0, math.nan, math.inf])
def test_outcome_rejects_a_bad_delay(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        Outcome(1, 1, OutcomeKind.SNOOZE, delay)
