"""Scenario 7: handlers that fight the consumer, in ``asynqpg-trio worker`` processes.

Injects: a handler that swallows its timeout's cancellation and returns as if it had
finished; a handler that shields itself from cancellation for far longer than the shutdown
grace, in a worker that gets SIGTERM (once, then in another worker twice); a handler that
blocks the event loop (``time.sleep``) for longer than the lease.

Checks: the swallowed timeout is a failed attempt ("timed out after N s"), never a
completion; the stopping worker exits within its bound (``shutdown_timeout +
flush_timeout``, plus a little) and at once after a second signal, with the exit status
that says it left tasks to the janitor and a line saying how many, and another worker
rescues and completes them; the blocked worker logs the stall naming the blocking type, and
the lease it lost or the outcome that came too late; the books balance.
"""

from __future__ import annotations

import re
import signal
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from asynqpg_trio import sync
from asynqpg_trio._cli._thread import LEFT_TO_JANITOR

from .books import LEASE_EXPIRED, check_books
from .procs import FAST_MAINTENANCE, Worker
from .workload import Spec, count, task, wait_settled

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.faults

FAST = [task("fast", Spec()) for _ in range(50)]


def wait_held(conn: psycopg.Connection[Any], worker: Worker, task_type: str, n: int) -> None:
    """Block until ``worker`` holds ``n`` running tasks of ``task_type``."""
    deadline = time.monotonic() + 20
    while (
        count(
            conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE status = 'running' AND type = %s"
            " AND lease_owner = %s",
            task_type,
            worker.consumer_id,
        )
        < n
    ):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)


def test_swallowed_timeout_is_a_failed_attempt(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    swallowing = [task("swallow", Spec(expect="failed", attempts=2, swallow=20)) for _ in range(3)]
    sync.enqueue_many(sync_conn, FAST + swallowing)
    worker = spawn(
        queue_dsn,
        "S1",
        kinds=["fast", "swallow"],
        timeouts={"swallow": 0.5},
        maintenance=FAST_MAINTENANCE,
    ).wait_ready()
    wait_settled(sync_conn, timeout=30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.log()
    totals = check_books(sync_conn)
    messages = [
        m
        for (ms,) in sync_conn.execute(
            "SELECT messages FROM asynqpg_tasks WHERE type = 'swallow'"
        ).fetchall()
        for m in ms
    ]
    assert len(messages) == 6
    assert all(
        m.startswith("TimeoutError: handler for 'swallow' timed out after 0.5 s") for m in messages
    ), messages
    print(f"\nscenario 7, swallowed timeouts: {totals}")


def test_shielded_handler_cannot_hold_a_stopping_worker(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    stubborn = [task("stubborn", Spec(shielded=40)) for _ in range(2)]
    sync.enqueue_many(sync_conn, stubborn)
    settings: dict[str, Any] = {
        "kinds": ["fast", "stubborn"],
        "lease": 2.0,
        "shutdown_timeout": 1.0,
        "flush_timeout": 1.0,
        "maintenance": FAST_MAINTENANCE,
    }
    bound = 1.0 + 1.0 + 5.0  # shutdown_timeout + flush_timeout, plus the consumer's margin

    # One SIGTERM: the worker waits out its grace, abandons the handlers, exits non-zero.
    w1 = spawn(queue_dsn, "T1", **settings).wait_ready()
    wait_held(sync_conn, w1, "stubborn", 2)
    w1.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert w1.wait(bound + 5) == LEFT_TO_JANITOR, w1.log()
    took = time.monotonic() - sent
    assert took < bound + 3, (took, w1.log())
    assert re.search(r"2 tasks left to the janitor", w1.log()), w1.log()

    # Two SIGTERMs: the second one stops at once, whatever the handlers do.
    sync.enqueue_many(sync_conn, [*FAST, task("stubborn", Spec(shielded=40))])
    w2 = spawn(queue_dsn, "T2", **{**settings, "shutdown_timeout": 30.0}).wait_ready()
    wait_held(sync_conn, w2, "stubborn", 1)
    w2.signal(signal.SIGTERM)
    time.sleep(0.3)
    w2.signal(signal.SIGTERM)
    second = time.monotonic()
    assert w2.wait(10) == LEFT_TO_JANITOR, w2.log()
    hard_took = time.monotonic() - second
    assert hard_took < 2.0, (hard_took, w2.log())
    assert "left to the janitor" in w2.log()

    # A third worker rescues and completes what they left (attempt 2 is not shielded).
    w3 = spawn(queue_dsn, "T3", **settings).wait_ready()
    wait_settled(sync_conn, timeout=30)
    w3.signal(signal.SIGTERM)
    assert w3.wait(15) == 0, w3.log()
    totals = check_books(sync_conn)
    expired = count(
        sync_conn,
        "SELECT count(*) FROM asynqpg_tasks WHERE type = 'stubborn'"
        " AND status = 'completed' AND attempts_elapsed = 2 AND messages[1] LIKE %s",
        LEASE_EXPIRED + "%",
    )
    assert expired == 3
    print(
        f"\nscenario 7, shielded handlers: bounded stop in {took:.1f} s, hard stop"
        f" {hard_took:.2f} s after the second signal; {totals}"
    )


def test_blocked_event_loop_is_reported(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    (blocker_id,) = sync.enqueue_many(sync_conn, [task("blocker", Spec(block=3.5))])
    settings: dict[str, Any] = {
        "kinds": ["fast", "blocker"],
        "lease": 2.0,
        "maintenance": FAST_MAINTENANCE,
    }
    w1 = spawn(queue_dsn, "B1", **settings).wait_ready()
    wait_held(sync_conn, w1, "blocker", 1)
    # B1's loop is blocked now (its handler sleeps 3.5 s in time.sleep): its lease expires
    # after 2 s and B2 takes the task over.
    w2 = spawn(queue_dsn, "B2", **settings).wait_ready()
    sync.enqueue_many(sync_conn, FAST)
    wait_settled(sync_conn, timeout=40)
    for w in (w1, w2):
        w.signal(signal.SIGTERM)
    for w in (w1, w2):
        assert w.wait(15) == 0, w.log()
    lines = w1.log().splitlines()
    stalls = [line for line in lines if "event loop stalled" in line]
    assert stalls, w1.log()
    assert f"'blocker' (task {blocker_id})" in stalls[0], stalls
    # What B1 says when it wakes: the lease it lost while the handler ran, or the outcome it
    # could not write any more.
    late = [
        line
        for line in lines
        if f"task {blocker_id} ('blocker')" in line and ("lost" in line or "stale" in line)
    ]
    assert late, w1.log()
    totals = check_books(sync_conn)
    assert (
        count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE id = %s AND messages[1] LIKE %s",
            blocker_id,
            LEASE_EXPIRED + "%",
        )
        == 1
    )
    print(f"\nscenario 7, blocked loop: {late[0][:100]}...; {totals}")
