"""The claim's queue contract, run against `FakeDatabase` and PostgreSQL: priority order,
(queue, type) pairs, the consumer's rooms, pause and resume, and cluster-wide limits.

The reference is the ``claim`` and ``next_ready_at`` statements (``_pg/sql/tasks.sql``) and
``asynqpg_limit_allowance`` (``_pg/migrations/0002_queues.sql``); see ``conftest.py`` for the
two backends and the clock.  Time moves only by ``backend.advance``; on PostgreSQL a rate
limit's bucket also refills by the milliseconds the test takes in real time, a few
thousandths of a start, so every expected count is away from a whole number of starts.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from asynqpg_trio import InvalidTask
from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._pacing import ClaimPlan

from ..helpers.state_db import plan as flush_plan
from .conftest import approx

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from asynqpg_trio._core._rows import ClaimedTask

    from .conftest import Backend

LEASE = 30.0


async def claim(
    backend: Backend,
    pairs: Mapping[tuple[str, str], int],
    *,
    type_room: Mapping[str, int] | None = None,
    queue_room: Mapping[str, int] | None = None,
    owner: str = "A",
    min_priority: int = -5,
) -> list[ClaimedTask]:
    """Claim as ``pairs`` say; without ``type_room``, each type's room is its pairs' sum (so
    it limits nothing).  The rows come back in id order."""
    if type_room is None:
        summed: dict[str, int] = {}
        for (_, task_type), n in pairs.items():
            summed[task_type] = summed.get(task_type, 0) + n
        type_room = summed
    plan = ClaimPlan(dict(pairs), dict(type_room), dict(queue_room or {}), min_priority)
    rows = await backend.tasks.claim(
        plan,
        owner=owner,
        lease=LEASE,
        takeover_message="lease expired",
        exhausted_message="lease expired; no attempt left",
        grace=5.0,
    )
    return sorted(rows, key=lambda r: r.id)


def ids(rows: Iterable[ClaimedTask]) -> list[int]:
    return [r.id for r in rows]


async def complete(backend: Backend, rows: Iterable[ClaimedTask]) -> None:
    outcomes = []
    for r in rows:
        assert r.lease_token is not None
        outcomes.append(Outcome(r.id, r.lease_token, OutcomeKind.COMPLETE))
    await backend.tasks.write_outcomes(flush_plan(outcomes))


async def running(backend: Backend, task_ids: Iterable[int]) -> int:
    """How many of these tasks are running."""
    count = 0
    for task_id in task_ids:
        view = await backend.view(task_id)
        count += view is not None and view.status == "running"
    return count


# -- order --------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_due_time_then_id(backend: Backend) -> None:
    lowest = await backend.enqueue(priority=-5)
    low = await backend.enqueue(priority=-2)
    late_urgent = await backend.enqueue(priority=3, delay=10)
    first, second = await backend.enqueue_many(2)  # one instant: the id decides
    later = await backend.enqueue(delay=5)
    urgent = await backend.enqueue(priority=3)
    top = await backend.enqueue(priority=5, delay=15)  # due last, but most urgent
    not_due = await backend.enqueue(priority=5, delay=60)
    await backend.advance(20)
    pair = {("default", "t"): 3}

    batch = await claim(backend, pair)

    assert ids(batch) == sorted([top, urgent, late_urgent])
    assert {(r.id, r.queue, r.priority) for r in batch} == {
        (top, "default", 5),
        (urgent, "default", 3),
        (late_urgent, "default", 3),
    }
    one_by_one = []
    while rows := await claim(backend, {("default", "t"): 1}):
        one_by_one.extend(ids(rows))
    assert one_by_one == [first, second, later, low, lowest]
    view = await backend.view(not_due)
    assert view is not None and view.status == "pending"


async def test_an_urgent_claim_takes_nothing_below_its_priority(backend: Backend) -> None:
    low = await backend.enqueue(priority=2)
    urgent = await backend.enqueue(priority=4)
    most = await backend.enqueue(priority=5, queue="mail")
    pairs = {("default", "t"): 5, ("mail", "t"): 5}

    assert ids(await claim(backend, pairs, min_priority=4)) == sorted([urgent, most])
    assert ids(await claim(backend, pairs, min_priority=4)) == []
    assert ids(await claim(backend, pairs)) == [low]


async def test_a_pair_takes_only_its_queue_and_type(backend: Backend) -> None:
    mail = await backend.enqueue_many(2, queue="mail", priority=5)
    plain = await backend.enqueue()
    mail_u = await backend.enqueue("u", queue="mail", priority=5)
    bulk = await backend.enqueue(queue="bulk", delay=40)

    assert ids(await claim(backend, {("default", "t"): 5})) == [plain]
    assert await claim(backend, {("bulk", "t"): 5, ("default", "u"): 5}) == []
    assert ids(await claim(backend, {("mail", "t"): 5})) == mail
    assert await backend.tasks.next_ready_in([("bulk", "t")]) == approx(40)
    assert await backend.tasks.next_ready_in([("bulk", "u"), ("mail", "v")]) is None
    assert ids(await claim(backend, {("mail", "u"): 5, ("bulk", "t"): 5})) == [mail_u]
    await backend.advance(41)
    assert ids(await claim(backend, {("bulk", "t"): 5})) == [bulk]


# -- the consumer's rooms -----------------------------------------------------------------


async def test_a_type_room_keeps_the_most_urgent_rows_across_queues(backend: Backend) -> None:
    a0 = await backend.enqueue(queue="a", priority=0)
    b2 = await backend.enqueue(queue="b", priority=2)
    a1 = await backend.enqueue(queue="a", priority=1)
    b_low = await backend.enqueue(queue="b", priority=-1)
    a_u = await backend.enqueue("u", queue="a", priority=-5)  # another type's room
    pairs = {("a", "t"): 3, ("b", "t"): 3, ("a", "u"): 3}

    rows = await claim(backend, pairs, type_room={"t": 3, "u": 1})

    assert ids(rows) == sorted([a0, b2, a1, a_u])
    left = await backend.view(b_low)
    assert left is not None and (left.status, left.leased) == ("pending", False)
    assert ids(await claim(backend, pairs, type_room={"t": 3, "u": 1})) == [b_low]


async def test_a_queue_room_keeps_the_most_urgent_rows_across_types(backend: Backend) -> None:
    a_t0 = await backend.enqueue(queue="a", priority=0)
    a_u3 = await backend.enqueue("u", queue="a", priority=3)
    a_t1 = await backend.enqueue(queue="a", priority=1)
    a_u_low = await backend.enqueue("u", queue="a", priority=-1)
    b_t = await backend.enqueue(queue="b", priority=-5)  # an uncapped queue
    pairs = {("a", "t"): 2, ("a", "u"): 2, ("b", "t"): 2}
    rooms = {"t": 4, "u": 4}

    first = await claim(backend, pairs, type_room=rooms, queue_room={"a": 2})
    assert ids(first) == sorted([a_u3, a_t1, b_t])
    second = await claim(backend, pairs, type_room=rooms, queue_room={"a": 2})
    assert ids(second) == [a_t0, a_u_low]


# -- pause and resume ---------------------------------------------------------------------


async def test_a_paused_queue_is_never_claimed_until_resumed(backend: Backend) -> None:
    urgent = await backend.enqueue(queue="a", priority=5)
    later = await backend.enqueue(queue="a", delay=30)
    b = await backend.enqueue(queue="b", delay=10)
    pairs = {("a", "t"): 5, ("b", "t"): 5}
    await backend.pause("a")
    await backend.pause("a")  # twice: still paused

    assert await backend.tasks.next_ready_in(list(pairs)) == approx(10)  # a's left out
    assert await backend.tasks.next_ready_in([("a", "t")]) is None
    assert await claim(backend, pairs) == []
    await backend.advance(40)  # everything is due
    assert ids(await claim(backend, pairs)) == [b]
    assert await claim(backend, pairs) == []
    assert await backend.tasks.next_ready_in(list(pairs)) == approx(LEASE)

    await backend.resume("a")

    assert await backend.tasks.next_ready_in([("a", "t")]) == approx(-40)
    assert ids(await claim(backend, pairs)) == [urgent, later]


async def test_a_paused_queue_s_expired_leases_wait_for_the_resume(backend: Backend) -> None:
    task = await backend.enqueue(queue="a")
    (first,) = await claim(backend, {("a", "t"): 1}, owner="A")
    await backend.pause("a")
    await backend.advance(LEASE + 1)

    assert await claim(backend, {("a", "t"): 1}, owner="B") == []
    assert await backend.tasks.next_ready_in([("a", "t")]) is None
    await backend.resume("a")
    (second,) = await claim(backend, {("a", "t"): 1}, owner="B")
    assert (second.id, second.taken_over) == (task, True)
    assert second.lease_token != first.lease_token


# -- cluster-wide limits ------------------------------------------------------------------


async def test_max_running_on_a_queue_bounds_every_owner(backend: Backend) -> None:
    await backend.set_limit("queue", "a", max_running=2)
    a_t = await backend.enqueue_many(3, queue="a")
    a_u = await backend.enqueue_many(2, "u", queue="a")
    b = await backend.enqueue_many(2, queue="b")
    a_ids = a_t + a_u
    pairs = {("a", "t"): 5, ("a", "u"): 5, ("b", "t"): 5}

    by_a = await claim(backend, pairs, owner="A")

    assert ids(by_a) == sorted(a_t[:2] + b)  # the limit is the queue's, across its types
    assert await claim(backend, pairs, owner="B") == []
    assert await running(backend, a_ids) == 2
    await complete(backend, by_a[:1])
    by_b = await claim(backend, pairs, owner="B")
    assert ids(by_b) == [a_t[2]]
    assert await running(backend, a_ids) == 2
    await complete(backend, [*by_a, *by_b])
    assert ids(await claim(backend, pairs, owner="B")) == a_u


async def test_max_running_on_a_type_bounds_every_owner(backend: Backend) -> None:
    await backend.set_limit("type", "t", max_running=3)
    in_a = await backend.enqueue_many(4, queue="a")
    in_b = await backend.enqueue_many(4, queue="b")
    other = await backend.enqueue_many(4, "u", queue="b")

    by_a = await claim(backend, {("a", "t"): 4}, owner="A")
    by_b = await claim(backend, {("b", "t"): 4, ("b", "u"): 4}, owner="B")

    assert ids(by_a) == in_a[:3]
    assert ids(by_b) == other  # the type limit leaves the other type alone
    assert await running(backend, in_a + in_b) == 3
    await complete(backend, by_a[:2])
    assert ids(await claim(backend, {("b", "t"): 4}, owner="B")) == in_b[:2]
    assert await running(backend, in_a + in_b) == 3


async def test_a_limit_of_zero_stops_its_queue_until_cleared(backend: Backend) -> None:
    await backend.set_limit("queue", "a", max_running=0)
    stopped = await backend.enqueue(queue="a")
    free = await backend.enqueue(queue="b")
    pairs = {("a", "t"): 5, ("b", "t"): 5}
    assert ids(await claim(backend, pairs)) == [free]
    assert await claim(backend, pairs) == []
    await backend.clear_limit("queue", "a")
    assert ids(await claim(backend, pairs)) == [stopped]


async def test_a_rate_limit_allows_its_burst_then_refills_at_its_rate(backend: Backend) -> None:
    await backend.set_limit("type", "t", rate=1, per=10, burst=3)
    await backend.enqueue_many(10)
    await backend.enqueue_many(2, "u")
    pairs = {("default", "t"): 10, ("default", "u"): 10}

    async def starts(owner: str = "A") -> list[str]:
        """Claim, complete what started (no lease expires to be taken over); their types."""
        rows = await claim(backend, pairs, owner=owner)
        await complete(backend, rows)
        return [r.type for r in rows]

    assert await starts() == ["t"] * 3 + ["u"] * 2  # the burst; the other type is not limited
    assert await starts("B") == []  # one bucket for every owner
    await backend.advance(10.5)  # 1.05 starts
    assert await starts("B") == ["t"]
    await backend.advance(25)  # 0.05 + 2.5
    assert await starts() == ["t"] * 2
    await backend.advance(1000)  # refilled only up to the burst
    assert await starts() == ["t"] * 3
    assert await starts() == []


async def test_a_rate_limit_on_a_queue_with_max_running(backend: Backend) -> None:
    await backend.set_limit("queue", "a", rate=2, per=60, max_running=1)
    await backend.enqueue_many(5, queue="a")
    pair = {("a", "t"): 5}
    (first,) = await claim(backend, pair)  # max_running binds first
    assert await claim(backend, pair) == []
    await complete(backend, [first])
    (second,) = await claim(backend, pair)  # the second token of the burst
    await complete(backend, [second])
    assert await claim(backend, pair) == []  # the bucket is empty
    await backend.advance(30.5)  # one start
    assert len(await claim(backend, pair)) == 1


async def test_a_priority_outside_the_range_is_refused(backend: Backend) -> None:
    for priority in (-6, 6):
        with pytest.raises(InvalidTask):
            await backend.enqueue(priority=priority)


@pytest.mark.parametrize("seed", range(8))
async def test_a_type_over_many_queues_gets_the_most_urgent_of_each_queues_share(
    backend: Backend, seed: int
) -> None:
    # Random backlogs over six queues, each queue's share (pair_n) and the type's room drawn
    # too: the claim reads a share of every queue first and more of the queues that may hold
    # more (two rounds, claim_spread); whatever it read, it takes each queue's most urgent up
    # to the queue's share, and of those the type's most urgent up to its room.
    rng = random.Random(seed)
    queues = [f"q{i}" for i in range(6)]
    urgency: dict[int, int] = {}
    by_queue: dict[str, list[int]] = {q: [] for q in queues}
    for _ in range(rng.randint(4, 12)):
        queue, priority = rng.choice(queues), rng.choice([-5, 0, 0, 2, 5])
        for task_id in await backend.enqueue_many(
            rng.randint(1, 12), queue=queue, priority=priority
        ):
            urgency[task_id] = priority
            by_queue[queue].append(task_id)
    pair_n, room = rng.randint(1, 12), rng.randint(1, 30)

    def key(task_id: int) -> tuple[int, int]:
        return (-urgency[task_id], task_id)  # later batches are due later and have larger ids

    shares = [i for q in queues for i in sorted(by_queue[q], key=key)[:pair_n]]
    expected = sorted(shares, key=key)[:room]

    got = await claim(backend, {(q, "t"): pair_n for q in queues}, type_room={"t": room})

    assert ids(got) == sorted(expected)


@pytest.mark.parametrize("skewed", [False, True])
async def test_a_type_over_many_queues_gets_its_most_urgent_whatever_the_skew(
    backend: Backend, skewed: bool
) -> None:
    # Ten queues, a room of 30: the claim reads a share of each queue first, and reads more
    # only of a queue that may hold more of the 30 most urgent (skewed: q0 holds 40 tasks of
    # priority 5, all more urgent than anything elsewhere).
    queues = [f"q{i}" for i in range(10)]
    urgency: dict[int, int] = {}
    for priority, n in ((5, 40), (0, 5)) if skewed else ((5, 10), (3, 10), (0, 20)):
        for task_id in await backend.enqueue_many(n, queue="q0", priority=priority):
            urgency[task_id] = priority
    for queue in queues[1:]:
        for task_id in await backend.enqueue_many(3, queue=queue, priority=4):
            urgency[task_id] = 4
    # Enqueued one batch after another: the later batch is due later and has larger ids.
    expected = sorted(urgency, key=lambda i: (-urgency[i], i))[:30]

    got = await claim(backend, {(q, "t"): 30 for q in queues}, type_room={"t": 30})

    assert ids(got) == sorted(expected)
