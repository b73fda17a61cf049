"""The claim over a million pending rows: its plan, its work, and priority ahead of a backlog.

One database for the module (filling it is nearly all of the cost): 1,000,000 pending rows,
in two queues and two types, half of them due and the rest due within the hour, inserted by
one statement, then ANALYZEd.  On it:

* ``EXPLAIN (FORMAT JSON)`` of the real ``claim`` statement, with a consumer's parameters
  (two queues, two types, a capped queue), walks ``asynqpg_tasks_queue_ready_idx`` and reads
  ``asynqpg_tasks`` by no sequential scan.
* The claim is short: under ``EXPLAIN (ANALYZE, BUFFERS)``, in a transaction rolled back,
  with a max_running and a rate limit on the queue and on the type, its index scans return at
  most each pair's number of rows per priority level, the limits' count of running tasks
  (counted in the buffers of the function scan that runs it) reads a few pages, and the whole
  statement a small fraction of the table's: not the backlog.
* A task of priority 5 enqueued behind more than 100,000 due priority-0 tasks of its queue
  and type comes back from a claim of n=1.

No wall-clock assertion: the bounds are on rows and buffers, which do not depend on the
machine."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import conninfo, sql

from asynqpg_trio import Task
from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._pg._claims import claim_params, claim_statement
from asynqpg_trio._pg._tasks_repo import CLAIM_COLUMNS, QUERIES
from asynqpg_trio.sync import enqueue

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow  # filling the million rows takes ten seconds or so

ROWS = 1_000_000
INDEX = "asynqpg_tasks_queue_ready_idx"

# Queue 'mail' for one row in 10, type 'u' for one in 4, priority 0; blocked_till spread over
# the hour before and the hour after now: (default, t) holds about 675,000 rows, half due.
FILL = """
    INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left, queue, priority)
    SELECT CASE WHEN i %% 4 = 0 THEN 'u' ELSE 't' END, '\\x00'::bytea,
           now() + make_interval(secs => (i %% 7200) - 3600), 3,
           CASE WHEN i %% 10 = 0 THEN 'mail' ELSE 'default' END, 0
    FROM generate_series(1, %(rows)s) AS i
"""
DUE_AHEAD = """
    SELECT count(*) FROM asynqpg_tasks
    WHERE queue = 'default' AND type = 't' AND priority = 0 AND status = 'pending'
      AND blocked_till <= asynqpg_now()
"""
PAGES = "SELECT relpages FROM pg_class WHERE relname = 'asynqpg_tasks'"
SET_LIMIT = """
    INSERT INTO asynqpg_limits (scope, name, max_running, rate, period, burst, tokens, refilled_at)
    VALUES (%(scope)s, %(name)s, 1000, 1000, 1, 1000, 1000, asynqpg_now())
"""

#: A consumer serving 'default' (uncapped) and 'mail' (cap 5) with handlers for t and u.
PLAN = ClaimPlan(
    pairs={("default", "t"): 20, ("default", "u"): 20, ("mail", "t"): 5, ("mail", "u"): 5},
    type_room={"t": 20, "u": 20},
    queue_room={"mail": 5},
)


def params(plan: ClaimPlan) -> dict[str, Any]:
    return claim_params(
        plan,
        owner="test",
        lease=30.0,
        takeover_message="lease expired",
        exhausted_message="lease expired; no attempt left",
    )


def explain(conn: psycopg.Connection[Any], options: str, plan: ClaimPlan) -> dict[str, Any]:
    """The claim's plan for ``plan``: the top of EXPLAIN (``options``, FORMAT JSON)."""
    statement = claim_statement(plan)
    found = conn.execute(f"EXPLAIN ({options}, FORMAT JSON) {statement}", params(plan))
    ((document,),) = found.fetchall()
    top: dict[str, Any] = document[0]
    return top


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and every node under it (subplans and CTEs included)."""
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def buffers(node: dict[str, Any]) -> int:
    """Shared buffers a node touched (hit or read), its children's included."""
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


@pytest.fixture(scope="module")
def million(server_dsn: str, template_db: str) -> Iterator[str]:
    """A database of this module's own holding the million rows (filled once)."""
    name = f"asynqpg_million_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = conninfo.make_conninfo(server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL, {"rows": ROWS})
            conn.execute("ANALYZE asynqpg_tasks")
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_the_claim_walks_the_queue_index_and_never_the_table(million: str) -> None:
    with psycopg.connect(million, autocommit=True) as conn:
        top = explain(conn, "COSTS true", PLAN)

    every = list(nodes(top["Plan"]))
    assert any(n.get("Index Name") == INDEX for n in every), "the claim skips its index"
    assert [
        n["Node Type"]
        for n in every
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "asynqpg_tasks"
    ] == []


def test_the_claim_reads_a_few_rows_not_the_backlog_even_under_limits(million: str) -> None:
    with psycopg.connect(million) as conn, conn.transaction(force_rollback=True):
        conn.execute(SET_LIMIT, {"scope": "queue", "name": "default"})
        conn.execute(SET_LIMIT, {"scope": "type", "name": "t"})
        top = explain(conn, "ANALYZE, BUFFERS", PLAN)
        (pages,) = conn.execute(PAGES).fetchall()[0]

    every = list(nodes(top["Plan"]))
    scans = [n for n in every if n.get("Index Name") == INDEX]
    assert scans
    # Per pair, each priority level's scan stops at the pair's number: at most that many
    # rows per level, eleven levels.
    most = 11 * sum(PLAN.pairs.values())
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) <= most
    allowances = [n for n in every if n.get("Function Name") == "asynqpg_limit_allowance"]
    assert [n["Actual Loops"] for n in allowances] == [2]  # both limits were read
    # The limits' count of running tasks (none run) reads a few index pages, not the queue's
    # or the type's hundreds of thousands of pending rows; the whole claim, 40 rows written
    # with their index entries, a small fraction of the table's pages.
    assert sum(buffers(n) for n in allowances) < 500
    assert buffers(top["Plan"]) < pages / 5
    assert top["Plan"]["Actual Rows"] == sum(PLAN.type_room.values())


def test_a_most_urgent_task_passes_a_backlog_of_100_000(million: str) -> None:
    with psycopg.connect(million, autocommit=True) as conn:
        ((ahead,),) = conn.execute(DUE_AHEAD).fetchall()
        assert ahead > 100_000
        urgent = enqueue(conn, Task("t", b"urgent", priority=5))

        found = conn.execute(QUERIES.claim, params(ClaimPlan.of({"t": 1}))).fetchall()

    (row,) = (dict(zip(CLAIM_COLUMNS, r, strict=True)) for r in found)
    assert (row["id"], row["priority"], row["status"]) == (urgent, 5, "running")


def readme_go_index() -> str:
    """The README's statement recreating the Go library's claim index, for shared tables."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Sharing with the Go library", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def test_the_go_index_the_readme_recreates_leaves_our_claim_on_its_own(million: str) -> None:
    statement = readme_go_index()
    assert "asynqpg_tasks_ready_idx" in statement
    with psycopg.connect(million) as conn, conn.transaction(force_rollback=True):
        # CONCURRENTLY cannot run in a transaction; the plain build is the same index.
        conn.execute(statement.replace(" CONCURRENTLY", ""))
        conn.execute("ANALYZE asynqpg_tasks")
        top = explain(conn, "COSTS true", PLAN)

    used = {n.get("Index Name") for n in nodes(top["Plan"])}
    assert INDEX in used
    assert "asynqpg_tasks_ready_idx" not in used
