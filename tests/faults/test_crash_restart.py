"""Scenario 1: a consumer process killed with SIGKILL mid-run, restarted, killed again.

Injects: two ``asynqpg-trio worker`` processes share 3,000 tasks of four kinds (fast, slow,
flaky, doomed) with 2 s leases and a janitor every 0.5 s.  Consumer A is SIGKILLed while it
holds running tasks, restarted, SIGKILLed again, restarted, and SIGKILLed a third time; B
carries on alone to the end and is then stopped with SIGTERM.

Checks: the tasks A held when it died were all taken over ("lease expired ..." by a claim or
the janitor), and the books balance: every task ends as planned, each completion ran once
except runs whose acknowledgement died with A (each followed by a takeover), attempts add up,
nothing is left running.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from asynqpg_trio import sync

from .books import LEASE_EXPIRED, check_books
from .procs import FAST_MAINTENANCE, Worker
from .workload import Mix, count, standard_tasks, wait_settled

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.faults

MIX = Mix(fast=1600, slow=800, flaky=400, doomed=200)
SETTINGS: dict[str, Any] = {
    "lease": 2.0,
    "maintenance": FAST_MAINTENANCE,
    "workers": {"fast": 10, "slow": 40, "flaky": 10, "doomed": 5},
}
KILLS = 3


def held_by(conn: psycopg.Connection[Any], owner: str) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM asynqpg_tasks WHERE status = 'running' AND lease_owner = %s", (owner,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def wait_holding(conn: psycopg.Connection[Any], worker: Worker, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(held_by(conn, worker.consumer_id)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{worker.consumer_id} never held {n} tasks:\n{worker.log()}")
        time.sleep(0.05)


def test_sigkill_and_restart(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    sync.enqueue_many(sync_conn, standard_tasks(MIX, seed=1))
    b = spawn(queue_dsn, "B", **SETTINGS)
    a = spawn(queue_dsn, "A1", **SETTINGS)
    b.wait_ready()
    a.wait_ready()

    orphaned: dict[str, list[int]] = {}
    for kill in range(1, KILLS + 1):
        wait_holding(sync_conn, a, 10, timeout=20)
        a.kill()
        orphaned[a.consumer_id] = held_by(sync_conn, a.consumer_id)
        assert orphaned[a.consumer_id], "the kill hit no running task"
        if kill < KILLS:
            a = spawn(queue_dsn, f"A{kill + 1}", **SETTINGS).wait_ready()

    wait_settled(sync_conn, timeout=90)
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0, b.log()

    totals = check_books(sync_conn)
    for owner, ids in orphaned.items():
        expired = count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE id = ANY(%s)"
            " AND EXISTS (SELECT 1 FROM unnest(messages) m WHERE m LIKE %s)",
            ids,
            LEASE_EXPIRED + "%",
        )
        assert expired == len(ids), f"{owner}: {len(ids) - expired} orphans not taken over"
    by_janitor = count(
        sync_conn,
        "SELECT count(*) FROM asynqpg_tasks, unnest(messages) m WHERE m LIKE '%by janitor%'",
    )
    print(
        f"\nscenario 1: {KILLS} SIGKILLs, {sum(map(len, orphaned.values()))} tasks orphaned"
        f" ({by_janitor} rescued by the janitor, the rest taken over by a claim); {totals}"
    )
    assert totals.tasks == MIX.total
    assert totals.lease_expiries >= sum(map(len, orphaned.values()))
