"""Properties of the fetcher's claim plan (``_core/_pacing.py``): alone, and through the claim.

The plan alone: each type asks for its whole free capacity, in batches; every queue with room
is paired with every type that asks, each pair for the smaller of its type's and its queue's
room.  Through the claim (its rules as ``tests/helpers/claim_model.py`` states them, the
stateful test holding PostgreSQL to them): whatever rows are due, a claim by the plan never
brings a type more than its free capacity nor a capped queue more than its room, takes only
from the queues served, and never comes back empty while a row it asked for is due: the most
urgent of them is always taken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio._core._pacing import ClaimPlan, plan_claim
from asynqpg_trio._core._row import TaskRow, TaskStatus
from tests.helpers.claim_model import Placement, predict_claim, urgency

TYPES = st.sampled_from(["a", "b", "c", "d"])
QUEUES = st.sampled_from(["default", "mail", "bulk"])
NOW = 5.0


@dataclass(frozen=True, slots=True)
class Consumer:
    """What the fetcher knows when it plans: capacities, what it holds, the queues it serves."""

    limits: dict[str, int]
    busy: dict[str, int]
    queues: dict[str, int | None]
    busy_queues: dict[str, int]

    @property
    def free(self) -> dict[str, int]:
        return {t: n - self.busy[t] for t, n in self.limits.items()}

    def plan(self) -> ClaimPlan:
        return plan_claim(self.free, self.busy, self.limits, self.queues, self.busy_queues)


@st.composite
def consumers(draw: st.DrawFn) -> Consumer:
    """A consumer holding some tasks of its types from its queues (at most each type's
    capacity; a queue may hold more than its cap, as after the cap was lowered)."""
    limits = draw(st.dictionaries(TYPES, st.integers(1, 12), min_size=1))
    queues = draw(st.dictionaries(QUEUES, st.none() | st.integers(1, 6), min_size=1))
    held: list[tuple[str, str]] = []
    for task_type, n in limits.items():
        for _ in range(draw(st.integers(0, n))):
            held.append((draw(st.sampled_from(sorted(queues))), task_type))
    busy = Counter(t for _, t in held)
    busy_queues = Counter(q for q, _ in held)
    return Consumer(
        limits, {t: busy[t] for t in limits}, queues, {q: busy_queues[q] for q in queues}
    )


@given(
    limits=st.dictionaries(TYPES, st.integers(1, 1000), min_size=1),
    queues=st.dictionaries(QUEUES, st.none() | st.integers(1, 50), min_size=1),
    data=st.data(),
)
def test_the_claim_plan_asks_only_for_free_capacity_in_batches(
    limits: dict[str, int], queues: dict[str, int | None], data: st.DataObject
) -> None:
    busy = {t: data.draw(st.integers(0, n), label=f"busy[{t}]") for t, n in limits.items()}
    busy_queues = {
        q: data.draw(st.integers(0, cap or 100), label=f"busy_queues[{q}]")
        for q, cap in queues.items()
    }
    free = {t: limits[t] - busy[t] for t in limits}
    plan = plan_claim(free, busy, limits, queues, busy_queues)
    for task_type, n in plan.type_room.items():
        assert 0 < n == free[task_type]  # the whole free capacity, never more
        assert busy[task_type] == 0 or n >= max(1, limits[task_type] // 2)
    for task_type, n in free.items():
        if task_type not in plan.type_room:  # left out: full, or less than half free while busy
            assert n == 0 or (busy[task_type] > 0 and n < max(1, limits[task_type] // 2))
    for (queue, task_type), n in plan.pairs.items():
        cap = queues[queue]
        assert 0 < n <= plan.type_room[task_type]
        if cap is not None:  # a capped queue is asked for no more than its room
            assert n <= plan.queue_room[queue] == cap - busy_queues[queue] > 0
    for queue, cap in queues.items():  # a queue is left out only when its cap is reached
        if all(key[0] != queue for key in plan.pairs) and plan.type_room:
            assert cap is not None and busy_queues[queue] >= cap


@given(consumer=consumers())
def test_the_plan_pairs_every_open_queue_with_every_type_that_asks(consumer: Consumer) -> None:
    plan = consumer.plan()
    open_queues = {
        q: None if cap is None else cap - consumer.busy_queues[q]
        for q, cap in consumer.queues.items()
        if cap is None or cap > consumer.busy_queues[q]
    }
    assert plan.queue_room == {q: room for q, room in open_queues.items() if room is not None}
    assert plan.pairs == {
        (q, t): n if room is None else min(n, room)
        for q, room in open_queues.items()
        for t, n in plan.type_room.items()
    }
    for task_type in consumer.limits:
        by_queues = sum(n for (_, t), n in plan.pairs.items() if t == task_type)
        assert plan.wanted_of(task_type) == min(plan.type_room.get(task_type, 0), by_queues)
        assert plan.wanted_of(task_type) <= consumer.free[task_type]


@st.composite
def due_rows(draw: st.DrawFn) -> dict[int, tuple[TaskRow, Placement]]:
    """Pending rows in the consumer's queues and types and others, some due at `NOW`."""
    rows: dict[int, tuple[TaskRow, Placement]] = {}
    for task_id in range(1, draw(st.integers(0, 30)) + 1):
        where = Placement(
            draw(st.sampled_from(["default", "mail", "bulk", "other"])),
            draw(st.sampled_from(["a", "b", "c", "d", "z"])),
            draw(st.integers(-5, 5)),
        )
        blocked_till = draw(st.sampled_from([0.0, 1.0, 5.0, 9.0]))
        rows[task_id] = (TaskRow(TaskStatus.PENDING, 3, 0, 0, None, blocked_till, None), where)
    return rows


@given(consumer=consumers(), stored=due_rows())
def test_a_claim_by_the_plan_never_overfills_nor_comes_back_empty(
    consumer: Consumer, stored: dict[int, tuple[TaskRow, Placement]]
) -> None:
    plan = consumer.plan()
    rows = {i: row for i, (row, _) in stored.items()}
    where = {i: w for i, (_, w) in stored.items()}

    taken = predict_claim(rows, where, plan, now=NOW, paused=(), limits={})

    by_type = Counter(where[i].type for i in taken)
    by_queue = Counter(where[i].queue for i in taken)
    for task_type, n in by_type.items():
        assert n <= consumer.free[task_type], f"type {task_type} overfilled"
    for queue, n in by_queue.items():
        cap = consumer.queues[queue]  # a KeyError: taken from a queue not served
        assert cap is None or consumer.busy_queues[queue] + n <= cap, f"queue {queue} overfilled"
    wanted = [
        i
        for i, row in rows.items()
        if (where[i].queue, where[i].type) in plan.pairs and row.blocked_till <= NOW
    ]
    assert bool(taken) == bool(wanted)
    if wanted:
        most_urgent = min(wanted, key=lambda i: urgency(i, rows[i], where[i]))
        assert most_urgent in taken
