"""The bad input of scenario 6 (`test_bad_input`): invalid tasks, odd but valid types and
payloads, rows no producer writes, and a retry policy that returns nonsense."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import psycopg

from asynqpg_trio import Task

NAIVE = datetime(2030, 1, 1)

BAD_TASKS: list[tuple[Any, str]] = [
    (Task("", b""), "type must not be empty"),
    (Task("x" * 256, b""), "type is 256 characters long"),
    (Task("é" * 256, b""), "type is 256 characters long"),
    (Task(b"bytes", b""), "type must be a str"),  # type: ignore[arg-type]
    (Task(None, b""), "type must be a str"),  # type: ignore[arg-type]
    (Task("nul\x00", b""), "type must not contain NUL"),
    (Task("lone \ud800 surrogate", b""), "type must be valid Unicode"),
    (Task("t", "text"), "payload must be bytes"),  # type: ignore[arg-type]
    (Task("t", None), "payload must be bytes"),  # type: ignore[arg-type]
    (Task("t", [1, 2]), "payload must be bytes"),  # type: ignore[arg-type]
    (Task("t", b"", idempotency_token=""), "idempotency_token must not be empty"),
    (Task("t", b"", idempotency_token="a\x00"), "idempotency_token must not contain NUL"),
    (Task("t", b"", idempotency_token="\udfff"), "idempotency_token must be valid Unicode"),
    (Task("t", b"", idempotency_token=7), "idempotency_token must be a str"),  # type: ignore[arg-type]
    (Task("t", b"", delay=-1), "delay must be a finite, non-negative"),
    (Task("t", b"", delay=math.nan), "delay must be a finite, non-negative"),
    (Task("t", b"", delay=math.inf), "delay must be a finite, non-negative"),
    (Task("t", b"", delay="5"), "delay must be seconds"),  # type: ignore[arg-type]
    (Task("t", b"", delay=timedelta(seconds=-1)), "delay must be a finite, non-negative"),
    (Task("t", b"", max_retry=-1), "max_retry must be between 0 and 32767"),
    (Task("t", b"", max_retry=32768), "max_retry must be between 0 and 32767"),
    (Task("t", b"", max_retry=1.5), "max_retry must be an int"),  # type: ignore[arg-type]
    (Task("t", b"", max_retry=True), "max_retry must be an int"),
    (Task("t", b"", process_at=NAIVE), "process_at must be timezone-aware"),
    (Task("t", b"", process_at="2030-01-01"), "process_at must be a datetime"),  # type: ignore[arg-type]
    ({"type": "t", "payload": b""}, "expected an asynqpg_trio.Task"),
]

ODD_TYPES = [
    "plain",
    "émoji 📧 type",
    'it\'s "quoted"',
    "with spaces and\ttab",
    "back\\slash",
    "x'); DROP TABLE asynqpg_tasks; --",
    "%s %(name)s {0} $1",
    "名" * 255,
    " leading and trailing ",
]
TEN_MB = bytes(range(256)) * (10 * 1024 * 1024 // 256)


# Rows no producer writes: (what, columns as SQL literals, expected final status).
EXPIRED = "now() - interval '1 minute'"
MALFORMED: list[tuple[str, dict[str, str], str]] = [
    (
        "running without a lease token (as a Go consumer leaves it), lease expired",
        {"status": "'running'", "blocked_till": EXPIRED, "attempts_elapsed": "1"},
        "completed",
    ),
    (
        "running, expired, no attempt left and a negative counter",
        {
            "status": "'running'",
            "blocked_till": EXPIRED,
            "attempts_left": "-1",
            "attempts_elapsed": "3",
            "lease_token": "12345",
            "lease_owner": "'ghost'",
        },
        "failed",
    ),
    ("pending with negative attempts_left", {"attempts_left": "-5"}, "completed"),
    ("pending with attempts_left 0", {"attempts_left": "0"}, "completed"),
    ("pending with negative attempts_elapsed", {"attempts_elapsed": "-3"}, "completed"),
    (
        "pending with negative attempts_elapsed, failing: the policy sees attempt -2",
        {"attempts_elapsed": "-3", "attempts_left": "2", "payload": "'fail'"},
        "pending",
    ),
    ("pending since the beginning of time", {"blocked_till": "'-infinity'"}, "completed"),
    ("junk trace context: a string", {"trace_context": """'"junk"'"""}, "completed"),
    ("junk trace context: an array", {"trace_context": """'[1, {"a": null}]'"""}, "completed"),
    (
        "junk trace context: bad traceparent",
        {"trace_context": """'{"traceparent": 5}'"""},
        "completed",
    ),
    ("finalized_at set while pending", {"finalized_at": "now()"}, "completed"),
    ("a NULL among the messages", {"messages": """'{NULL, "x"}'"""}, "completed"),
    ("a type nobody handles", {"type": "'nobody'"}, "pending"),
]


def insert_row(conn: psycopg.Connection[Any], columns: dict[str, str]) -> int:
    """Insert one task row by hand: sane defaults, overridden by ``columns`` (SQL literals)."""
    values = {
        "type": "'hand'",
        "payload": "'ok'",
        "status": "'pending'",
        "blocked_till": "now()",
        "attempts_left": "3",
        "attempts_elapsed": "0",
    } | columns
    sql = (
        f"INSERT INTO asynqpg_tasks ({', '.join(values)})"
        f" VALUES ({', '.join(values.values())}) RETURNING id"
    )
    row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return int(row[0])


class NonsensePolicy:
    """A user retry policy that returns what no delay should be."""

    def __init__(self) -> None:
        self.values = [math.inf, math.nan, -5.0, 1e300, -math.inf, 10.0**20]
        self.calls = 0

    def next_retry(self, attempt: int) -> float:
        self.calls += 1
        return self.values[self.calls % len(self.values)]
