"""No sequential scan of ``asynqpg_tasks`` on any hot path, over a table shaped like a big one.

One database for the module: 300,000 completed tasks (finalized over the past ten days), 30,000
pending (half due), 2,000 running with expired leases and 3,000 failed, ``VACUUM ANALYZE``d so
the planner sees the proportions of a large table (ten completed rows per pending one).

The plans are the real ones: every statement runs through the library's own code paths (the
producer, a consumer with handlers that complete, fail, retry, snooze and outlive their lease's
renewal, the maintenance leader's rescue and clean, the client and the dashboard's reads) on a
connection with ``auto_explain`` loaded, which sends each statement's plan back as a NOTICE.
Every plan is searched for a ``Seq Scan`` on ``asynqpg_tasks`` and for a walk of its primary
key filtering row by row (a page in id order that reads every finished row to find a page of
pending ones), and each hot statement must have been seen.  The figures on 10 million
completed and 1 million pending rows are in the benchmarks README
(``benchmarks/large_table.py``).

Known exceptions, listed (``FULL_COUNTS``) so that they show: the whole-table counts of
``Client.stats`` and ``Client.queues`` (the dashboard's overview and Queues pages) read every
row by design; the deployment guide says what they cost on a large table.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
from psycopg import conninfo, sql

from asynqpg_trio import (
    Client,
    MaintenanceConfig,
    Producer,
    SkipRetry,
    Task,
    TaskInfo,
    TaskSnooze,
    Unique,
    open_consumer,
    open_pool,
)
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._pg._tasks_repo import PgTasks

from .helpers.web import dashboard_client

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

FILL = """
    INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,
                               attempts_elapsed, created_at, finalized_at, attempted_at,
                               lease_token, lease_owner, queue)
    SELECT 't', '\\x00'::bytea, s.status,
           CASE s.status WHEN 'pending' THEN now() + make_interval(secs => (i % 7200) - 3600)
                         WHEN 'running' THEN now() - interval '1 minute'
                         ELSE now() - make_interval(secs => i) END,
           CASE WHEN s.status IN ('pending', 'running') THEN 3 ELSE 0 END,
           CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
           now() - make_interval(secs => i + 10),
           CASE WHEN s.status IN ('completed', 'failed')
                THEN now() - make_interval(secs => i * 3) END,
           CASE WHEN s.status <> 'pending' THEN now() - make_interval(secs => i) END,
           CASE WHEN s.status = 'running' THEN nextval('asynqpg_lease_token_seq') END,
           CASE WHEN s.status = 'running' THEN 'gone' END,
           CASE WHEN i % 10 = 0 THEN 'mail' ELSE 'default' END
    FROM generate_series(1, 335000) AS i
    CROSS JOIN LATERAL (SELECT CASE WHEN i <= 300000 THEN 'completed'
                                    WHEN i <= 330000 THEN 'pending'
                                    WHEN i <= 332000 THEN 'running'
                                    ELSE 'failed' END AS status) AS s
"""
AUTO_EXPLAIN = (
    "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0"
    " -c auto_explain.log_level=notice -c auto_explain.log_format=json"
)

#: Statements that count the whole table on purpose (see the module docstring): the stats
#: (GROUP BY type, status) and the queue counts (GROUP BY queue, status).
FULL_COUNTS = ("GROUP BY type, status", "GROUP BY queue, status")

#: Each hot statement, by a fragment of its text that no other statement has.
HOT = {
    "claim": "FOR NO KEY UPDATE OF t SKIP LOCKED",
    "claim, a type served from several queues": "LIMIT 2 * w.n",
    "enqueue with idempotency tokens": "ON CONFLICT DO NOTHING",
    "enqueue without tokens": "array_agg",
    "enqueue unique": "unique_states",
    "find a token's holder": "idempotency_token = $2",
    # Every outcome (complete, fail, retry, snooze, release) is one statement per flush, its
    # rows locked in id order first.
    "outcomes": "WHEN u.kind = 0 THEN 'completed'",
    "lease renewal": "make_interval(secs => $3), updated_at",
    "lost leases": "IS DISTINCT FROM u.token",
    "next ready": "CROSS JOIN generate_series(5, -5, -1)",
    "queue depth": "count(*)::bigint AS ready",
    "rescue select": "t.status = 'running' AND t.blocked_till <= asynqpg_now()",
    "rescue update": "u(id, token, status, delay, message)",
    "cleaner delete": "DELETE FROM asynqpg_tasks t\nUSING doomed",
    "client get": "FROM asynqpg_tasks\nWHERE id = $1",
    "client list": "count(*) AS total FROM matching",
    "throughput": "date_trunc('minute', t.finalized_at)",
}


@pytest.fixture(scope="module")
def big(server_dsn: str, template_db: str) -> Iterator[str]:
    """A database of this module's own, filled once and analysed."""
    name = f"asynqpg_big_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = conninfo.make_conninfo(server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL)
            conn.execute("VACUUM ANALYZE asynqpg_tasks")
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _plans(notices: list[str]) -> list[dict[str, Any]]:
    plans = []
    for message in notices:
        head, sep, body = message.partition("plan:\n")
        if sep and head.startswith("duration"):
            plans.append(json.loads(body))
    return plans


async def _exercise(dsn: str, notices: list[str]) -> None:
    """Run every hot path once or more on one auto_explain connection."""
    async with open_pool(dsn, min_size=1, max_size=1, options=AUTO_EXPLAIN) as pool:
        async with pool.connection() as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        producer = Producer(pool)
        client = Client(pool)
        await producer.enqueue_many([Task("ok", b"") for _ in range(20)])
        await producer.enqueue(Task("ok", b"", idempotency_token="tok"))
        with pytest.raises(Exception, match="already exists"):
            await producer.enqueue(Task("ok", b"", idempotency_token="tok"))
        await producer.enqueue(Task("ok", b"u", unique=Unique(key="k")))
        for kind in ("fail", "retry", "snooze", "slow"):
            await producer.enqueue(Task(kind, b""))

        done = trio.Event()
        seen: set[str] = set()

        async def ok(task: TaskInfo) -> None:
            seen.add(task.type)

        async def fail(task: TaskInfo) -> None:
            seen.add(task.type)
            raise SkipRetry("no")

        async def retry(task: TaskInfo) -> None:
            seen.add(task.type)
            raise RuntimeError("again")

        async def snooze(task: TaskInfo) -> None:
            seen.add(task.type)
            raise TaskSnooze(3600)

        async def slow(task: TaskInfo) -> None:
            await trio.sleep(2.5)  # outlives a renewal of its 1.5 s lease
            seen.add(task.type)
            done.set()

        async with open_consumer(
            pool,
            handlers={"ok": ok, "fail": fail, "retry": retry, "snooze": snooze, "slow": slow},
            lease_duration=1.5,
            poll_interval=0.2,
            cancel_check_interval=0.3,
            queue_metrics_interval=0.2,
            maintenance=MaintenanceConfig(
                ttl=3.0,
                renew_interval=1.0,
                janitor_interval=0.3,
                cleaner_interval=0.3,
                cleaner_batch=500,
                max_batches_per_run=1,
                completed_retention=3600,
            ),
        ):
            with trio.fail_after(60):
                await done.wait()
                await trio.sleep(1.0)  # a rescue and a cleaning have run
        assert seen == {"ok", "fail", "retry", "snooze", "slow"}

        page = await client.list_tasks(statuses=["completed"], types=["ok"], limit=50)
        await client.list_tasks(statuses=["pending"], queues=["mail"], limit=50)
        await client.list_tasks(limit=50, order_by="id", descending=True)
        for task in page.tasks[:3]:
            await client.get_task(task.id)
            await client.get_task_summary(task.id)
        await client.throughput()
        # The queue gauges' statement (sampled when a meter provider reads them).
        await PgTasks(pool).queue_depth(["ok", "slow"], ["default", "mail"])
        # A claim as a consumer serving both queues sends it (claim_spread).
        await PgTasks(pool).claim(
            ClaimPlan({("default", "ok"): 5, ("mail", "ok"): 5}, {"ok": 5}, {}),
            owner="hot",
            lease=1.0,
            takeover_message="lease expired",
            exhausted_message="lease expired; no attempt left",
            grace=1.0,
        )
        async with dashboard_client(pool) as http:
            for path in ("/api/tasks?status=failed", f"/api/tasks/{page.tasks[0].id}"):
                answer = await http.get(path)
                assert answer.status_code == 200, answer.text


def test_no_hot_statement_scans_the_table(big: str) -> None:
    notices: list[str] = []
    trio.run(_exercise, big, notices)
    plans = _plans(notices)
    assert plans, "auto_explain reported no plan"

    texts = [p["Query Text"] for p in plans]
    missing = [name for name, fragment in HOT.items() if not any(fragment in t for t in texts)]
    assert missing == [], "hot statements not exercised"

    scans: list[tuple[str, str | None, str | None]] = []
    for plan in plans:
        text = plan["Query Text"]
        if any(marker in text for marker in FULL_COUNTS):
            continue
        scans.extend(
            (node["Node Type"], node.get("Index Name"), node.get("Filter"))
            for node in _nodes(plan["Plan"])
            if _reads_the_whole_table(node)
        )
    assert scans == [], "\n".join(map(str, scans))


def _reads_the_whole_table(node: dict[str, Any]) -> bool:
    """A sequential scan of the table, or a walk of its primary key filtering row by row (a
    page of pending tasks in id order found by reading every finished row before them)."""
    if node.get("Relation Name") != "asynqpg_tasks":
        return False
    if node["Node Type"] == "Seq Scan":
        return True
    walk = node.get("Index Name") == "asynqpg_tasks_pkey" and "Index Cond" not in node
    return walk and "Filter" in node
