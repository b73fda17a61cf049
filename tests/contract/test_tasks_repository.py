"""The tasks repository's contract, run against `FakeDatabase` and PostgreSQL (`PgTasks`).

Each test drives ``backend.tasks`` as the consumer's actors do and reads the rows back through
``backend.view``; see ``conftest.py`` for the two backends and the clock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from asynqpg_trio._core._batching import Outcome, OutcomeKind
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._core._progress import Progress
from asynqpg_trio._core._rows import ClaimedTask, LostLease, Notice

from ..helpers.state_db import plan
from .conftest import approx

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .conftest import Backend, View

LEASE = 30.0
TAKEOVER = "lease expired"
EXHAUSTED = "lease expired; no attempt left"


async def claim(backend: Backend, wanted: Mapping[str, int], owner: str = "A") -> list[ClaimedTask]:
    rows = await backend.tasks.claim(
        ClaimPlan.of(wanted),
        owner=owner,
        lease=LEASE,
        takeover_message=TAKEOVER,
        exhausted_message=EXHAUSTED,
        grace=5.0,
    )
    return sorted(rows, key=lambda r: r.id)


def token(row: ClaimedTask) -> int:
    """The lease token of a row the claim leased."""
    assert row.lease_token is not None
    return row.lease_token


async def write(backend: Backend, *outcomes: Outcome) -> set[int]:
    return await backend.tasks.write_outcomes(plan(outcomes))


async def view(backend: Backend, task_id: int) -> View:
    found = await backend.view(task_id)
    assert found is not None
    return found


# -- claim --------------------------------------------------------------------------------


async def test_claim_takes_the_oldest_due_tasks_up_to_each_limit(backend: Backend) -> None:
    a1, a2, a3 = [await backend.enqueue("a") for _ in range(3)]
    later = await backend.enqueue("a", delay=20)
    b1 = await backend.enqueue("b")
    c1 = await backend.enqueue("c")
    await backend.advance(1)

    rows = await claim(backend, {"a": 2, "b": 5, "c": 0})

    assert [r.id for r in rows] == [a1, a2, b1]
    assert len({token(r) for r in rows}) == 3
    for r in rows:
        assert (r.status, r.attempts_left, r.attempts_elapsed) == ("running", 2, 1)
        assert (r.messages, r.taken_over) == (None, False)
    assert [r.id for r in await claim(backend, {"a": 5, "c": 0})] == [a3]
    assert await claim(backend, {"a": 5}) == []
    await backend.advance(20)  # the delayed task is due; the leases (30 s) have not expired
    assert [r.id for r in await claim(backend, {"a": 5, "c": 1})] == [later, c1]
    leased = await view(backend, a1)
    assert (leased.status, leased.leased, leased.lease_owner) == ("running", True, "A")
    assert leased.ready_in == approx(LEASE - 20)


async def test_claim_goes_by_ready_time_then_id(backend: Backend) -> None:
    delayed = await backend.enqueue(delay=10)
    ready = await backend.enqueue()
    await backend.advance(20)
    assert [r.id for r in await claim(backend, {"t": 1})] == [ready]
    assert [r.id for r in await claim(backend, {"t": 1})] == [delayed]


async def test_next_ready_in_and_queue_depth(backend: Backend) -> None:
    assert await backend.tasks.next_ready_in([("default", "t")]) is None
    await backend.enqueue(delay=30)
    assert await backend.tasks.next_ready_in([("default", "t")]) == approx(30)
    assert await backend.tasks.next_ready_in([("default", "other")]) is None
    await backend.enqueue()
    await backend.enqueue()
    await backend.advance(10)
    ready_in = await backend.tasks.next_ready_in([("default", "t"), ("default", "other")])
    assert ready_in == approx(-10)
    depth = await backend.tasks.queue_depth(["t", "other"])
    assert [(d.type, d.ready) for d in depth] == [("t", 2), ("other", 0)]
    assert depth[0].oldest_age == approx(10)
    assert depth[1].oldest_age == 0


# -- outcomes -----------------------------------------------------------------------------


async def test_complete_and_fail_finalize(backend: Backend) -> None:
    done, bad = await backend.enqueue(), await backend.enqueue()
    r1, r2 = await claim(backend, {"t": 2})
    written = await write(
        backend,
        Outcome(done, token(r1), OutcomeKind.COMPLETE),
        Outcome(bad, token(r2), OutcomeKind.FAIL, message="boom"),
    )
    assert written == {done, bad}
    v1, v2 = await view(backend, done), await view(backend, bad)
    assert (v1.status, v1.finalized, v1.leased, v1.lease_owner) == ("completed", True, False, None)
    assert (v2.status, v2.finalized, v2.leased, v2.messages) == ("failed", True, False, ("boom",))
    # Written once: the row no longer runs, so the same write again is stale.
    assert await write(backend, Outcome(done, token(r1), OutcomeKind.COMPLETE)) == set()


async def test_progress_and_results_are_stored_fenced_by_the_lease(backend: Backend) -> None:
    a, b, c = await backend.enqueue(), await backend.enqueue(), await backend.enqueue()
    r1, r2, r3 = await claim(backend, {"t": 3})
    reports = [(a, token(r1), Progress(0.25, "a quarter")), (b, token(r2) + 99, Progress(1, None))]
    assert await backend.tasks.write_progress(reports) == {a}  # b's token is stale
    assert ((await view(backend, a)).progress, (await view(backend, a)).progress_note) == (
        0.25,
        "a quarter",
    )
    assert (await view(backend, b)).progress is None
    json_result = Outcome(a, token(r1), OutcomeKind.COMPLETE, result=b'{"n":1}', codec="json")
    last = Progress(0.5, "last")
    with_progress = Outcome(b, token(r2), OutcomeKind.COMPLETE, result=b"\x00", codec="bytes")
    with_progress.progress = last
    assert await write(backend, json_result, with_progress) == {a, b}
    va, vb = await view(backend, a), await view(backend, b)
    assert (va.result, va.progress, va.progress_note) == ({"n": 1}, 0.25, "a quarter")
    assert (vb.result, vb.progress, vb.progress_note) == (b"\x00", 0.5, "last")
    # A plain completion stores nothing; a finished task takes no more progress.
    assert await write(backend, Outcome(c, token(r3), OutcomeKind.COMPLETE)) == {c}
    assert (await view(backend, c)).result is None
    assert await backend.tasks.write_progress([(c, token(r3), Progress(0.9, None))]) == set()
    assert (await view(backend, c)).progress is None


async def test_retry_goes_back_to_pending_until_the_attempts_run_out(backend: Backend) -> None:
    task = await backend.enqueue(max_retry=2)
    (r,) = await claim(backend, {"t": 1})
    assert await write(backend, Outcome(task, token(r), OutcomeKind.RETRY, 5, "e1")) == {task}
    v = await view(backend, task)
    assert (v.status, v.attempts_left, v.attempts_elapsed, v.messages) == ("pending", 1, 1, ("e1",))
    assert (v.ready_in, v.finalized, v.leased) == (approx(5), False, False)
    assert await claim(backend, {"t": 1}) == []  # not before its delay
    await backend.advance(5)
    (r,) = await claim(backend, {"t": 1})
    assert (r.attempts_left, r.attempts_elapsed, r.messages) == (0, 2, ["e1"])
    assert await write(backend, Outcome(task, token(r), OutcomeKind.RETRY, 5, "e2")) == {task}
    v = await view(backend, task)
    assert (v.status, v.finalized, v.messages) == ("failed", True, ("e1", "e2"))


async def test_snooze_and_release_refund_the_attempt(backend: Backend) -> None:
    snoozed, released = await backend.enqueue(), await backend.enqueue()
    r1, r2 = await claim(backend, {"t": 2})
    written = await write(
        backend,
        Outcome(snoozed, token(r1), OutcomeKind.SNOOZE, delay=7),
        Outcome(released, token(r2), OutcomeKind.RELEASE),
    )
    assert written == {snoozed, released}
    for task_id, ready_in in ((snoozed, 7.0), (released, 0.0)):
        v = await view(backend, task_id)
        assert (v.status, v.attempts_left, v.attempts_elapsed) == ("pending", 3, 0)
        assert (v.ready_in, v.leased, v.messages) == (approx(ready_in), False, ())
    assert [r.id for r in await claim(backend, {"t": 5})] == [released]


# -- fencing, leases ----------------------------------------------------------------------


async def test_a_stale_token_changes_nothing(backend: Backend) -> None:
    task = await backend.enqueue()
    (r,) = await claim(backend, {"t": 1})
    before = await view(backend, task)
    stale = token(r) + 1000
    for kind in OutcomeKind:
        assert await write(backend, Outcome(task, stale, kind, 1.0, "x")) == set()
    assert await backend.tasks.extend_leases([task], [stale], LEASE) == set()
    after = await view(backend, task)
    assert replace(after, ready_in=0) == replace(before, ready_in=0)
    assert after.ready_in == approx(before.ready_in)
    assert await backend.tasks.lost_leases([task, r.id], [stale, token(r)]) == [
        LostLease(task, "running", "A")
    ]


async def test_extending_a_lease_keeps_it_from_takeover(backend: Backend) -> None:
    task = await backend.enqueue()
    (r,) = await claim(backend, {"t": 1})
    await backend.advance(20)
    assert await backend.tasks.extend_leases([task], [token(r)], LEASE) == {task}
    assert (await view(backend, task)).ready_in == approx(LEASE)
    await backend.advance(20)  # 40 s after the claim: the first lease alone would have expired
    assert await claim(backend, {"t": 1}) == []
    assert await backend.tasks.lost_leases([task], [token(r)]) == []


async def test_an_expired_lease_is_taken_over_and_charged_an_attempt(backend: Backend) -> None:
    task = await backend.enqueue(max_retry=3)
    (first,) = await claim(backend, {"t": 1}, owner="A")
    await backend.advance(LEASE + 1)

    (second,) = await claim(backend, {"t": 1}, owner="B")

    assert (second.id, second.status, second.taken_over) == (task, "running", True)
    assert second.lease_token != token(first)
    assert (second.attempts_left, second.attempts_elapsed) == (1, 2)
    assert second.messages == [TAKEOVER]
    v = await view(backend, task)
    assert (v.lease_owner, v.ready_in) == ("B", approx(LEASE))
    # The old holder has lost it: it cannot renew or write, and it learns who holds it now.
    assert await backend.tasks.extend_leases([task], [token(first)], LEASE) == set()
    assert await write(backend, Outcome(task, token(first), OutcomeKind.COMPLETE)) == set()
    assert await backend.tasks.lost_leases([task], [token(first)]) == [
        LostLease(task, "running", "B")
    ]
    assert await write(backend, Outcome(task, token(second), OutcomeKind.COMPLETE)) == {task}


async def test_taking_over_with_no_attempt_left_fails_the_task(backend: Backend) -> None:
    task = await backend.enqueue(max_retry=1)
    (first,) = await claim(backend, {"t": 1}, owner="A")
    await backend.advance(LEASE + 1)

    (second,) = await claim(backend, {"t": 1}, owner="B")

    assert (second.id, second.status, second.taken_over) == (task, "failed", True)
    assert (second.attempts_left, second.attempts_elapsed) == (0, 1)
    assert second.lease_token is None
    assert second.messages == [EXHAUSTED]
    v = await view(backend, task)
    assert (v.status, v.finalized, v.leased, v.lease_owner) == ("failed", True, False, None)
    assert await backend.tasks.lost_leases([task], [token(first)]) == [
        LostLease(task, "failed", None)
    ]
    assert await claim(backend, {"t": 1}) == []


async def test_cancel_makes_the_lease_lost(backend: Backend) -> None:
    task = await backend.enqueue()
    (r,) = await claim(backend, {"t": 1})
    await backend.cancel(task)
    assert await backend.tasks.lost_leases([task], [token(r)]) == [
        LostLease(task, "cancelled", None)
    ]
    assert await backend.tasks.extend_leases([task], [token(r)], LEASE) == set()
    assert await write(backend, Outcome(task, token(r), OutcomeKind.COMPLETE)) == set()
    v = await view(backend, task)
    assert (v.status, v.finalized, v.leased) == ("cancelled", True, False)


# -- notifications ------------------------------------------------------------------------


async def test_notifications_wake_on_ready_tasks_and_report_cancels(backend: Backend) -> None:
    async with backend.tasks.notifications() as notices:
        task = await backend.enqueue(priority=3)
        with trio.fail_after(10):  # the payload: the most urgent priority made ready
            assert await anext(notices) == Notice("asynqpg_new", "3")
        await claim(backend, {"t": 1})
        await backend.cancel(task)
        with trio.fail_after(10):
            assert await anext(notices) == Notice("asynqpg_cancel", str(task))
