"""The hot paths on a large table: 10 million completed tasks and 1 million pending.

``python -m benchmarks.large_table [--completed 10000000] [--pending 1000000]`` fills a fresh
database on ``$ASYNQPG_DSN``'s server (default: this machine's 127.0.0.1:5432) with one
``INSERT ... SELECT generate_series`` per million rows, ``VACUUM ANALYZE``s it (what
autovacuum does soon after a bulk load), then measures, through the library's own code:

* claim latency: 200 claims of up to 50 tasks (p50/p99 ms), each claimed task left running;
* enqueue rate: 20 batches of 1,000 (tasks/s), and 300 single enqueues (tasks/s);
* the dashboard's reads: a page of completed tasks of one type, a page of pending tasks, a
  page of everything by id, one task, the stats (overview page) and the queue counts (Queues
  page): ms each (median of 5);
* the cleaner: ``clean_batch`` of 1,000 rows repeatedly for 20 seconds as the elected leader:
  rows/s, and the longest single batch (the longest any lock is held).

Prints one JSON document; the figures are quoted in ``benchmarks/README.md``.  Not part of
the test suite (``tests/test_hot_plans.py`` checks the plans on a smaller table in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
import trio
from psycopg import conninfo, sql

from asynqpg_trio import Client, Producer, Task, migrate, open_pool
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._pg._maintenance_repo import PgMaintenance
from asynqpg_trio._pg._tasks_repo import claim

FILL = """
    INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
                               attempts_elapsed, created_at, finalized_at, attempted_at, queue)
    SELECT CASE WHEN i %% 4 = 0 THEN 'report' ELSE 'email' END, '\\x7b7d'::bytea,
           %(status)s::text,
           CASE WHEN %(status)s = 'pending' THEN now() + make_interval(secs => (i %% 7200) - 3600)
                ELSE now() - make_interval(secs => i / 100) END,
           CASE WHEN %(status)s = 'pending' THEN 3 ELSE 0 END,
           CASE WHEN %(status)s = 'pending' THEN 0 ELSE 1 END,
           now() - make_interval(secs => i / 100 + 5),
           CASE WHEN %(status)s = 'completed' THEN now() - make_interval(secs => i / 100) END,
           CASE WHEN %(status)s = 'completed' THEN now() - make_interval(secs => i / 100) END,
           CASE WHEN i %% 10 = 0 THEN 'mail' ELSE 'default' END
    FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS i
"""
CHUNK = 1_000_000


def _fill(dsn: str, completed: int, pending: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for status, total in (("completed", completed), ("pending", pending)):
            for start in range(1, total + 1, CHUNK):
                stop = min(start + CHUNK - 1, total)
                conn.execute(FILL, {"status": status, "start": start, "stop": stop})
                print(f"filled {status} {stop:,}/{total:,}", file=sys.stderr, flush=True)
        conn.execute("VACUUM ANALYZE asynqpg_tasks")
    return time.perf_counter() - started


async def _timed(fn: Any, repeat: int = 5) -> float:
    """Median ms of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


async def _measure(dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with open_pool(dsn, min_size=2, max_size=4) as pool:
        plan = ClaimPlan(
            pairs={("default", "email"): 50, ("mail", "email"): 50},
            type_room={"email": 50},
            queue_room={},
        )
        latencies = []
        async with pool.connection() as conn:
            for _ in range(200):
                started = time.perf_counter()
                await claim(
                    conn,
                    plan,
                    owner="bench",
                    lease=3600.0,
                    takeover_message="x",
                    exhausted_message="x",
                )
                latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        out["claim_p50_ms"] = round(latencies[len(latencies) // 2], 2)
        out["claim_p99_ms"] = round(latencies[int(len(latencies) * 0.99)], 2)

        producer = Producer(pool)
        started = time.perf_counter()
        for _ in range(20):
            await producer.enqueue_many([Task("email", b"{}") for _ in range(1000)])
        out["enqueue_batch_per_s"] = round(20_000 / (time.perf_counter() - started))
        started = time.perf_counter()
        for _ in range(300):
            await producer.enqueue(Task("email", b"{}"))
        out["enqueue_single_per_s"] = round(300 / (time.perf_counter() - started))

        client = Client(pool)
        page = await client.list_tasks(statuses=["completed"], types=["report"], limit=50)
        some_id = page.tasks[0].id
        out["list_completed_of_a_type_ms"] = await _timed(
            lambda: client.list_tasks(statuses=["completed"], types=["report"], limit=50)
        )
        out["list_pending_ms"] = await _timed(
            lambda: client.list_tasks(statuses=["pending"], limit=50)
        )
        out["list_all_by_id_ms"] = await _timed(
            lambda: client.list_tasks(limit=50, descending=True)
        )
        out["get_task_ms"] = await _timed(lambda: client.get_task(some_id))
        out["stats_ms"] = await _timed(client.stats, repeat=3)
        out["queue_counts_ms"] = await _timed(client.queues, repeat=3)

        maintenance = PgMaintenance(pool)
        assert await maintenance.elect("bench", "bench", 600.0) is not None
        deleted = 0
        longest = 0.0
        started = time.perf_counter()
        while time.perf_counter() - started < 20:
            t0 = time.perf_counter()
            n = await maintenance.clean_batch("bench", "bench", "completed", 60.0, 1000)
            longest = max(longest, time.perf_counter() - t0)
            deleted += n
            if n == 0:
                break
        seconds = time.perf_counter() - started
        out["cleaner_rows_per_s"] = round(deleted / seconds)
        out["cleaner_longest_batch_ms"] = round(longest * 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    """Fill, measure, print JSON; the database is dropped at the end."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_table")
    parser.add_argument("--completed", type=int, default=10_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    server = os.environ.get("ASYNQPG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    name = f"bench_large_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(server, dbname=name)
    try:
        trio.run(migrate, dsn)
        result: dict[str, Any] = {"completed": args.completed, "pending": args.pending}
        result["fill_s"] = round(_fill(dsn, args.completed, args.pending), 1)
        with psycopg.connect(dsn) as conn:
            size = conn.execute("SELECT pg_total_relation_size('asynqpg_tasks')").fetchone()
        result["table_with_indexes_mb"] = round(size[0] / 2**20) if size else None
        result.update(trio.run(_measure, dsn))
        print(json.dumps(result, indent=2))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
