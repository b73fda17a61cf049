"""Scenario 4: graceful and hard shutdown of ``asynqpg-trio worker`` under full load.

Injects: a worker process at full load (every handler busy, prefetch buffers full) gets one
SIGTERM: it must finish what it can within its 2 s ``shutdown_timeout``, release the rest
and exit 0.  A second worker gets SIGTERM twice, 0.3 s apart: the second signal must cut the
shutdown short, and exit with the status that says it left tasks to the janitor.  A third
worker then works the queue to the end.

Checks: after the graceful stop no task is left running under the first worker's lease and
none of its tasks needed a takeover (released tasks got their attempt back, with no message);
the hard stop returns well within the grace after the second signal, and whatever it left
running is taken over once its lease expires; the worker's closing summary counts what the
shutdown did; the books balance.
"""

from __future__ import annotations

import re
import signal
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
from psycopg import conninfo

from asynqpg_trio import Task, TaskInfo, open_consumer, sync
from asynqpg_trio._cli._thread import LEFT_TO_JANITOR

from .books import LEASE_EXPIRED, check_books
from .procs import FAST_MAINTENANCE, Worker
from .proxy import FreezingProxy, server_address
from .workload import KINDS, Mix, Spec, count, standard_tasks, task, wait_settled

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.faults

MIX = Mix(fast=1500, slow=500, flaky=300, doomed=100, slow_range=(0.2, 0.8))
LONG = 20  # tasks of type "long" (4 s) outlast the shutdown grace
GRACE = 2.0
SETTINGS: dict[str, Any] = {
    "lease": 2.0,
    "shutdown_timeout": GRACE,
    "maintenance": FAST_MAINTENANCE,
    "kinds": [*KINDS, "long"],
    "workers": {"fast": 10, "slow": 40, "flaky": 10, "doomed": 5, "long": LONG},
}


def held_by(conn: psycopg.Connection[Any], owner: str) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM asynqpg_tasks WHERE status = 'running' AND lease_owner = %s", (owner,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def at_full_load(conn: psycopg.Connection[Any], worker: Worker) -> None:
    """Wait until the worker holds every long task and at least 60 others, and has run some.

    A claim is visible here as soon as it commits, before its reply reaches the worker; until
    the worker has recorded a run its handlers may not have started, and a stop would (rightly)
    release every claimed task unstarted.
    """
    deadline = time.monotonic() + 20
    while True:
        held = held_by(conn, worker.consumer_id)
        long = count(
            conn, "SELECT count(*) FROM asynqpg_tasks WHERE id = ANY(%s) AND type = 'long'", held
        )
        ran = count(conn, "SELECT count(*) FROM runs WHERE consumer = %s", worker.consumer_id)
        if long == LONG and len(held) >= LONG + 60 and ran > 0:
            return
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)


def stopped_counts(worker: Worker) -> dict[str, int]:
    match = re.search(r"worker stopped: (.*)", worker.log())
    assert match, worker.log()
    return {k: int(v) for k, v in re.findall(r"([a-z]+) (\d+)", match[1])}


def test_sigterm_once_then_twice(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    tasks = standard_tasks(MIX, seed=4) + [task("long", Spec(sleep=4.0)) for _ in range(LONG)]
    sync.enqueue_many(sync_conn, tasks)

    # One SIGTERM: graceful.
    w1 = spawn(queue_dsn, "W1", **SETTINGS).wait_ready()
    at_full_load(sync_conn, w1)
    w1.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert w1.wait(GRACE + 10) == 0, w1.log()
    graceful_took = time.monotonic() - sent
    assert graceful_took >= GRACE, "the long handlers were not given their grace"
    assert held_by(sync_conn, "W1") == []
    # The long handlers were cancelled at the end of the grace and released: attempt refunded.
    assert (
        count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE type = 'long' AND status = 'pending'"
            " AND attempts_elapsed = 0 AND messages = '{}'",
        )
        == LONG
    )
    w1_counts = stopped_counts(w1)
    assert w1_counts["released"] >= LONG, w1.log()
    assert (
        count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks, unnest(messages) m WHERE m LIKE %s",
            LEASE_EXPIRED + "%",
        )
        == 0
    )

    # SIGTERM twice: the second one stops at once.
    w2 = spawn(queue_dsn, "W2", **SETTINGS).wait_ready()
    at_full_load(sync_conn, w2)
    w2.signal(signal.SIGTERM)
    time.sleep(0.3)
    w2.signal(signal.SIGTERM)
    second = time.monotonic()
    status = w2.wait(GRACE + 10)
    hard_took = time.monotonic() - second
    left_running = held_by(sync_conn, "W2")
    assert hard_took < GRACE / 2, (hard_took, w2.log())
    assert left_running, "the hard stop left nothing running"
    # The hard stop says so: its own exit status, and how many tasks it left.
    assert status == LEFT_TO_JANITOR, w2.log()
    assert stopped_counts(w2)["abandoned"] >= len(left_running), w2.log()
    assert "left to the janitor" in w2.log()

    # A third worker finishes the queue, taking over what W2 left running.
    w3 = spawn(queue_dsn, "W3", **SETTINGS).wait_ready()
    wait_settled(sync_conn, timeout=60)
    w3.signal(signal.SIGTERM)
    assert w3.wait(GRACE + 10) == 0, w3.log()

    totals = check_books(sync_conn)
    if left_running:
        taken_over = count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE id = ANY(%s)"
            " AND EXISTS (SELECT 1 FROM unnest(messages) m WHERE m LIKE %s)",
            left_running,
            LEASE_EXPIRED + "%",
        )
        assert taken_over == len(left_running)
    print(
        f"\nscenario 4: 3 SIGTERMs; graceful stop in {graceful_took:.1f} s"
        f" (released {w1_counts['released']}), hard stop {hard_took:.2f} s after the second"
        f" signal leaving {len(left_running)} running; {totals}"
    )
    assert totals.tasks == MIX.total + LONG


async def test_claim_in_flight_at_shutdown_is_released(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    """A graceful stop that begins while a claim's reply is on its way: the server has
    committed the claim, so the tasks are leased to this consumer; they must be released, not
    left running until the lease expires (which would cost them an attempt)."""
    marker = b"claimed-while-stopping"
    proxy = FreezingProxy(*server_address(queue_dsn))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        proxied = conninfo.make_conninfo(queue_dsn, host="127.0.0.1", port=str(port))

        async def never(task: TaskInfo) -> None:
            raise AssertionError("a task claimed while stopping must not run")

        async with open_consumer(
            proxied, handlers={"t": never}, poll_interval=0.1, maintenance=False
        ):
            proxy.freeze_on_bytes(marker)  # the claim's reply will be held
            sync.enqueue_many(sync_conn, [Task("t", marker) for _ in range(3)])
            with trio.fail_after(10):
                while not proxy.frozen:
                    await trio.sleep(0.01)
            nursery.start_soon(thaw_later, proxy)
        nursery.cancel_scope.cancel()
    rows = sync_conn.execute(
        "SELECT status, attempts_elapsed, lease_token FROM asynqpg_tasks"
    ).fetchall()
    assert rows == [("pending", 0, None)] * 3


async def thaw_later(proxy: FreezingProxy) -> None:
    await trio.sleep(0.5)
    proxy.thaw()
