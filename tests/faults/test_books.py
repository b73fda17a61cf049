"""The books checker itself: it passes a balanced ledger and names each kind of imbalance.

Rows are written by hand (no consumer runs), one task per case, so each case shows exactly
which rule catches it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .books import check_books
from .workload import RUNS_DDL, Spec

pytestmark = pytest.mark.faults

TAKEOVER = "lease expired: the consumer running this attempt stopped renewing its lease"


def write(
    conn: psycopg.Connection[Any],
    *,
    status: str,
    left: int,
    elapsed: int,
    messages: list[str],
    runs: list[tuple[int, str]],
    expect: str = "completed",
    attempts: int = 3,
    task_id: int | None = None,
    lease: int | None = None,
) -> int:
    payload = Spec(expect=expect, attempts=attempts).payload()
    row = conn.execute(
        "INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,"
        " attempts_elapsed, messages, lease_token, finalized_at)"
        " VALUES ('t', %s, %s, now(), %s, %s, %s, %s,"
        " CASE WHEN %s IN ('completed', 'failed') THEN now() END) RETURNING id",
        (payload, status, left, elapsed, messages, lease, status),
    ).fetchone()
    assert row is not None
    tid = int(row[0]) if task_id is None else task_id
    for attempt, outcome in runs:
        conn.execute(
            "INSERT INTO runs (nonce, task_id, attempt, outcome, pid, consumer)"
            " VALUES (gen_random_uuid(), %s, %s, %s, 1, 'c')",
            (tid, attempt, outcome),
        )
    return tid


@pytest.fixture
def conn(sync_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    sync_conn.execute(RUNS_DDL)
    return sync_conn


def test_balanced_books(conn: psycopg.Connection[Any]) -> None:
    write(conn, status="completed", left=2, elapsed=1, messages=[], runs=[(1, "ok")])
    write(  # failed once, then completed
        conn, status="completed", left=1, elapsed=2, messages=["E"], runs=[(1, "error"), (2, "ok")]
    )
    write(  # completed, but the ack died with its consumer: taken over, ran again
        conn,
        status="completed",
        left=1,
        elapsed=2,
        messages=[TAKEOVER],
        runs=[(1, "ok"), (2, "ok")],
    )
    write(  # failed for good
        conn,
        status="failed",
        left=0,
        elapsed=2,
        messages=["E", "E"],
        runs=[(1, "error"), (2, "error")],
        expect="failed",
        attempts=2,
    )
    totals = check_books(conn)
    assert (totals.tasks, totals.runs, totals.completions, totals.lost_completions) == (4, 7, 4, 1)
    assert (totals.lease_expiries, totals.errors, totals.attempts) == (1, 3, 7)


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        (
            {
                "status": "completed",
                "left": 1,
                "elapsed": 2,
                "messages": [],
                "runs": [(1, "ok"), (2, "ok")],
            },
            "attempt 1 ran to completion, yet was neither acknowledged nor taken over",
        ),
        (
            {
                "status": "completed",
                "left": 1,
                "elapsed": 2,
                "messages": ["E"],
                "runs": [(1, "ok"), (2, "ok")],
            },
            "attempt 1 ran to completion, yet was neither acknowledged nor taken over",
        ),
        (
            {"status": "running", "left": 2, "elapsed": 1, "messages": [], "runs": [], "lease": 7},
            "status running, expected completed",
        ),
        (
            {"status": "running", "left": 2, "elapsed": 1, "messages": [], "runs": [], "lease": 7},
            "lease left behind",
        ),
        (
            {"status": "pending", "left": 3, "elapsed": 0, "messages": [], "runs": []},
            "status pending, expected completed",
        ),
        (
            {"status": "completed", "left": 5, "elapsed": 1, "messages": [], "runs": [(1, "ok")]},
            "attempts do not add up",
        ),
        (
            {"status": "completed", "left": 1, "elapsed": 2, "messages": [], "runs": [(2, "ok")]},
            "an attempt is unaccounted for",
        ),
        (
            {
                "status": "completed",
                "left": 2,
                "elapsed": 1,
                "messages": [],
                "runs": [(1, "ok"), (1, "ok")],
            },
            "attempts executed more than once: [1]",
        ),
        (
            {"status": "completed", "left": 2, "elapsed": 1, "messages": [], "runs": []},
            "completed, but 0 runs of the completing attempt 1",
        ),
        (
            {
                "status": "completed",
                "left": 1,
                "elapsed": 2,
                "messages": [TAKEOVER],
                "runs": [(2, "ok"), (3, "ok")],
            },
            "a run of attempt 3, but 2 attempts were claimed",
        ),
        (
            {
                "status": "failed",
                "left": 1,
                "elapsed": 2,
                "messages": ["E"],
                "runs": [(1, "error"), (2, "error")],
                "expect": "failed",
            },
            "attempt 2 failed, but no message accounts for it",
        ),
        (
            {
                "status": "completed",
                "left": 2,
                "elapsed": 1,
                "messages": [],
                "runs": [(1, "ok")],
                "task_id": 999_999,
            },
            "runs recorded for tasks not in the table",
        ),
    ],
)
def test_each_imbalance_is_named(
    conn: psycopg.Connection[Any], case: dict[str, Any], problem: str
) -> None:
    write(conn, **case)
    with pytest.raises(AssertionError, match="the books do not balance") as caught:
        check_books(conn)
    assert problem in str(caught.value)
