"""Scenario 3: a network stall that outlasts the lease.

Injects: consumer F reaches the database through a TCP proxy on loopback; consumer G connects
directly.  While F holds running tasks the proxy freezes every F connection (nothing is
forwarded, nothing is reset) for longer than the 2 s lease, then thaws.  The freeze strikes
as the reply to one of F's outcome writes is on its way: F's completer does not know its rows
were written (the write is one autocommit statement, so F holds no row lock while it stalls;
a write that took several statements once had to be bounded by the server for that).  F's
handlers keep running meanwhile (their run log goes straight to the database), so their
completions pile up behind the stall.

Checks: no task F held is taken over before its lease could have expired; all of them are
taken over once it has ("lease expired ..."); after the thaw F's late acknowledgements are
refused as stale (``stale_acks``), the completions written by F and G add up to exactly the
completed rows (nothing completed twice), and the books balance.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest
import trio
from psycopg import conninfo

from asynqpg_trio import ConstantRetryPolicy, open_consumer, open_pool, sync

from .books import LEASE_EXPIRED, check_books
from .procs import fast_maintenance
from .proxy import FreezingProxy, server_address
from .workload import Mix, Recorder, deadlocks, make_handlers, standard_tasks, wait_settled_async

pytestmark = pytest.mark.faults

LEASE = 2.0
MIX = Mix(fast=1000, slow=800, flaky=200, doomed=100, slow_range=(0.3, 1.0))
WORKERS = {"fast": 10, "slow": 20, "flaky": 10, "doomed": 5}


def running_held_by(conn: psycopg.Connection[Any], owner: str) -> set[int]:
    rows = conn.execute(
        "SELECT id FROM asynqpg_tasks WHERE status = 'running' AND lease_owner = %s", (owner,)
    ).fetchall()
    return {int(r[0]) for r in rows}


def activity(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """What every session of the database is doing (for failure messages)."""
    return conn.execute(
        "SELECT pid, state, left(query, 50) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()


async def test_frozen_consumer_is_taken_over_and_its_late_acks_refused(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    sync.enqueue_many(sync_conn, standard_tasks(MIX, seed=3))
    proxy = FreezingProxy(*server_address(queue_dsn))
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        port = await nursery.start(proxy.serve)
        proxied = conninfo.make_conninfo(queue_dsn, host="127.0.0.1", port=str(port))
        record_pool = await stack.enter_async_context(open_pool(queue_dsn, max_size=10))
        consumers = {}
        for name, dsn in (("F", proxied), ("G", queue_dsn)):
            consumers[name] = await stack.enter_async_context(
                open_consumer(
                    dsn,
                    handlers=make_handlers(Recorder(record_pool, name), workers=WORKERS),
                    consumer_id=name,
                    lease_duration=LEASE,
                    poll_interval=0.2,
                    retry_policy=ConstantRetryPolicy(0.05),
                    maintenance=fast_maintenance(),
                )
            )
        f = consumers["F"]

        with trio.fail_after(20):
            while len(running_held_by(sync_conn, "F")) < 10:
                await trio.sleep(0.05)
        proxy.freeze_after_outcome_write()  # F stalls as an outcome write's reply comes back
        with trio.fail_after(10):
            while not proxy.frozen:
                await trio.sleep(0.001)
        frozen_at = trio.current_time()
        await trio.sleep(0.2)  # statements sent just before the freeze finish on the server
        held = running_held_by(sync_conn, "F")
        assert held

        # Taken over once the lease expires, and not before: F renewed at most a third of a
        # lease before the freeze.
        first_takeover = None
        deadline = trio.current_time() + LEASE * 4
        while left := held & running_held_by(sync_conn, "F"):
            now = trio.current_time()
            assert now < deadline, f"{len(left)} not taken over; {activity(sync_conn)}"
            if first_takeover is None and len(left) < len(held):
                first_takeover = now - frozen_at
            await trio.sleep(0.05)
        if first_takeover is None:
            first_takeover = trio.current_time() - frozen_at
        assert first_takeover >= LEASE * 2 / 3 - 0.2, first_takeover
        await trio.sleep(0.5)
        assert f.statistics().stale_acks == 0
        stalled_for = trio.current_time() - frozen_at
        proxy.thaw()

        with trio.fail_after(15):
            while f.statistics().stale_acks == 0:
                await trio.sleep(0.05)
        await wait_settled_async(queue_dsn, timeout=60)
        await stack.aclose()
        nursery.cancel_scope.cancel()

    stats = {name: c.statistics() for name, c in consumers.items()}
    assert not deadlocks(caplog.records)
    totals = check_books(sync_conn)
    completed_rows = totals.statuses.get("completed", 0)
    assert sum(s.completed for s in stats.values()) == completed_rows
    taken_over = sync_conn.execute(
        "SELECT count(*) FROM asynqpg_tasks WHERE id = ANY(%s)"
        " AND EXISTS (SELECT 1 FROM unnest(messages) m WHERE m LIKE %s)",
        (sorted(held), LEASE_EXPIRED + "%"),
    ).fetchone()
    assert taken_over == (len(held),)
    print(
        f"\nscenario 3: 1 stall of {stalled_for:.1f} s over {proxy.connections} proxied"
        f" connections; {len(held)} tasks held by F taken over (first after"
        f" {first_takeover:.1f} s), F's stale acks {stats['F'].stale_acks}; {totals}"
    )
    assert totals.tasks == MIX.total
