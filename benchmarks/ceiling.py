"""The raw SQL ceiling: what plain psycopg gets from PostgreSQL on our real table.

Theory of operation
-------------------
No queue library here: the loops a queue's hot path reduces to, run against
``asynqpg_tasks`` as our migrations create it (every index, the fill factor, the lease-token
sequence), each in its own processes so Python never shares a core with another loop.

- *insert (unnest)*: ``INSERT ... SELECT FROM unnest(text[], bytea[])`` in chunks.
- *insert (COPY)*: ``COPY ... FROM STDIN (FORMAT BINARY)`` in chunks; each chunk's rows share
  one ``blocked_till``, as one enqueue statement's rows do.
- *claim+complete*: claim a batch with ``FOR NO KEY UPDATE SKIP LOCKED`` from one range of the
  claim's index, as ours reads one priority level of one queue (pending -> running,
  an attempt consumed, a lease token drawn), then complete the batch with one ``UPDATE`` from
  ``unnest(ids, tokens)``; two autocommit round trips per batch, as a consumer that batches
  its completions makes.
- *notify latency*: a listener thread waits on ``LISTEN``; the measuring thread takes a
  timestamp, inserts one row and notifies in the same statement; the listener claims the row
  and stamps the "handler start".  This is the floor for idle enqueue-to-start latency.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import trio

import asynqpg_trio

from .common import IDLE_GAP, ConsumerGroup, counting_remaining, percentile

if TYPE_CHECKING:
    from .common import Signals

__all__ = ["claim_complete", "insert_copy", "insert_unnest", "migrate", "notify_latency"]

TASK_TYPE = "noop"
PAYLOAD = b"{}"

_INSERT_UNNEST = b"""
INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)
SELECT u.type, u.payload, now(), 25 FROM unnest(%s::text[], %s::bytea[]) AS u(type, payload)
"""
_COPY = (
    b"COPY asynqpg_tasks (type, payload, blocked_till, attempts_left) FROM STDIN (FORMAT BINARY)"
)
_CLAIM = b"""
UPDATE asynqpg_tasks t SET
    status = 'running', attempts_left = t.attempts_left - 1,
    attempts_elapsed = t.attempts_elapsed + 1,
    lease_token = nextval('asynqpg_lease_token_seq'),
    blocked_till = now() + interval '60 seconds', attempted_at = now(), updated_at = now()
WHERE t.id = ANY(ARRAY(
    SELECT id FROM asynqpg_tasks
    WHERE queue = 'default' AND type = %s AND priority = 0
      AND status NOT IN ('completed', 'failed', 'cancelled') AND blocked_till <= now()
    ORDER BY blocked_till, id
    LIMIT %s
    FOR NO KEY UPDATE SKIP LOCKED
))
RETURNING t.id, t.lease_token, t.payload
"""
_COMPLETE = b"""
UPDATE asynqpg_tasks t SET
    status = 'completed', finalized_at = now(), updated_at = now(), lease_token = NULL
FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, token)
WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running'
"""
_INSERT_NOTIFY = b"""
WITH ins AS (
    INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)
    VALUES (%s, %s, now(), 25) RETURNING id
)
SELECT pg_notify('asynqpg_bench', ''), (SELECT id FROM ins)
"""
_UNFINISHED = "SELECT count(*) FROM asynqpg_tasks WHERE status IN ('pending', 'running')"
_ROWS = "SELECT count(*) FROM asynqpg_tasks"


def migrate(dsn: str) -> None:
    """Apply our migrations to the database."""
    trio.run(asynqpg_trio.migrate, dsn)


def _truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"TRUNCATE asynqpg_tasks")


# --- children -------------------------------------------------------------------------------


def _insert_child(signals: Signals, dsn: str, rows: int, chunk: int, use_copy: bool) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            types = [TASK_TYPE] * chunk
            payloads = [PAYLOAD] * chunk
            signals.ready()
            signals.go.wait()
            done = 0
            while done < rows and not signals.stop.is_set():
                size = min(chunk, rows - done)
                if use_copy:
                    # One timestamp per chunk, as one enqueue statement gives its rows.
                    now = datetime.now(UTC)
                    with conn.cursor() as cur, cur.copy(_COPY) as copy:
                        copy.set_types(["text", "bytea", "timestamptz", "int2"])
                        for _ in range(size):
                            copy.write_row((TASK_TYPE, PAYLOAD, now, 25))
                else:
                    conn.execute(_INSERT_UNNEST, (types[:size], payloads[:size]), binary=True)
                done += size
                signals.bump(size)
    except BaseException:
        signals.failed()
        raise


def _claim_child(signals: Signals, dsn: str, batch: int, max_rounds: int) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(b"SELECT 1")
            signals.ready()
            signals.go.wait()
            for _ in range(max_rounds):
                if signals.stop.is_set():
                    break
                rows: list[Any] = conn.execute(_CLAIM, (TASK_TYPE, batch)).fetchall()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                tokens = [r[1] for r in rows]
                conn.execute(_COMPLETE, (ids, tokens))
                signals.bump(len(rows))
    except BaseException:
        signals.failed()
        raise


# --- measurements ---------------------------------------------------------------------------


def _insert(dsn: str, n: int, connections: int, chunk: int, *, use_copy: bool) -> float:
    _truncate(dsn)
    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    rows, close = counting_remaining(dsn, _ROWS)
    try:
        args = [(dsn, share, chunk, use_copy) for share in shares]
        with ConsumerGroup(_insert_child, args) as group:
            return n / group.run_to_empty(n, lambda: n - rows(), timeout=120.0)
    finally:
        close()


def insert_unnest(dsn: str, n: int, connections: int = 2, chunk: int = 5000) -> float:
    """Rows/s inserting N rows with ``unnest`` arrays over ``connections`` processes."""
    return _insert(dsn, n, connections, chunk, use_copy=False)


def insert_copy(dsn: str, n: int, connections: int = 2, chunk: int = 10_000) -> float:
    """Rows/s inserting N rows with binary COPY over ``connections`` processes."""
    return _insert(dsn, n, connections, chunk, use_copy=True)


def claim_complete(dsn: str, n: int, connections: int = 2, batch: int = 500) -> float:
    """Tasks/s claiming and completing N pending rows (inserted first, then ANALYZEd).

    The rows are inserted with ``unnest`` in chunks of 5,000, so each chunk shares one
    ``blocked_till`` as a batch enqueue's rows do.
    """
    _insert(dsn, n, connections, 5000, use_copy=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"VACUUM ANALYZE asynqpg_tasks")
    remaining, close = counting_remaining(dsn, _UNFINISHED)
    try:
        max_rounds = n // batch + 100
        with ConsumerGroup(_claim_child, [(dsn, batch, max_rounds)] * connections) as group:
            return n / group.run_to_empty(n, remaining, timeout=120.0)
    finally:
        close()


def notify_latency(dsn: str, count: int, gap: float = IDLE_GAP) -> tuple[float, float]:
    """(p50, p99) in ms from before an INSERT+NOTIFY to a listener having claimed the row."""
    _truncate(dsn)
    starts: queue.Queue[float] = queue.Queue()
    stop = threading.Event()
    listening = threading.Event()

    def listener() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(b"LISTEN asynqpg_bench")
            listening.set()
            while not stop.is_set():
                if not any(True for _ in conn.notifies(timeout=0.2, stop_after=1)):
                    continue
                rows = conn.execute(_CLAIM, (TASK_TYPE, 10)).fetchall()
                if rows:
                    starts.put(time.perf_counter())
                    conn.execute(_COMPLETE, ([r[0] for r in rows], [r[1] for r in rows]))

    thread = threading.Thread(target=listener, daemon=True)
    thread.start()
    latencies: list[float] = []
    try:
        if not listening.wait(10.0):
            raise TimeoutError("listener did not start")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(count):
                before = time.perf_counter()
                conn.execute(_INSERT_NOTIFY, (TASK_TYPE, PAYLOAD))
                latencies.append((starts.get(timeout=5.0) - before) * 1000.0)
                time.sleep(gap)  # let the listener go idle again
    finally:
        stop.set()
        thread.join(5.0)
    return percentile(latencies, 50), percentile(latencies, 99)
