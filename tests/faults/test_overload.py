"""Scenario 7: overload, 100,000 tasks enqueued while two consumer processes run.

Injects: a producer enqueues 100,000 tasks (90 % fast, 10 % flaky: one failure, then a
retry) in batches of 5,000 far faster than two ``asynqpg-trio worker`` processes can work
them off, so a backlog of tens of thousands builds up; meanwhile one "urgent" task a tenth
of a second trickles in on a type of its own.

Checks: each worker's resident memory, sampled from /proc, stays bounded while the backlog
peaks and drains (what a consumer holds is its claim capacity, not the backlog), and does not
grow with the tasks it has processed; no task starves: every urgent task is claimed within a
bound while the flood is on, and the flood itself is served oldest batch first; the books
balance.
"""

from __future__ import annotations

import signal
import statistics
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from asynqpg_trio import Producer, Task

from .books import check_books
from .procs import Worker
from .workload import Spec, count, settled_counts, task

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.faults

TOTAL = 100_000
BATCH = 5_000
URGENT_EVERY = 0.1
MAX_URGENT_WAIT = 2.0
SETTINGS: dict[str, Any] = {
    "lease": 5.0,
    "kinds": ["fast", "flaky", "urgent"],
    "workers": {"fast": 20, "flaky": 10, "urgent": 2},
}


def bulk_batch(seed: int) -> list[Task]:
    flaky = task("flaky", Spec(fail=1))
    fast = task("fast", Spec())
    return [flaky if (seed + i) % 10 == 0 else fast for i in range(BATCH)]


async def test_overload(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], spawn: Callable[..., Worker]
) -> None:
    workers = [spawn(queue_dsn, f"O{i}", **SETTINGS) for i in (1, 2)]
    for worker in workers:
        worker.wait_ready()
    rss: dict[str, list[tuple[int, int]]] = {w.consumer_id: [] for w in workers}
    enqueued = 0
    urgent = 0
    peak_backlog = 0
    started = time.monotonic()

    async with Producer(queue_dsn) as producer, trio.open_nursery() as nursery:

        async def trickle() -> None:
            nonlocal urgent
            while True:
                await producer.enqueue(task("urgent", Spec()))
                urgent += 1
                await trio.sleep(URGENT_EVERY)

        async def sample() -> None:
            nonlocal peak_backlog
            while True:
                open_, _ = settled_counts(sync_conn)
                peak_backlog = max(peak_backlog, open_)
                done = count_completed(sync_conn)
                for worker in workers:
                    rss[worker.consumer_id].append((done, worker.rss_kib()))
                await trio.sleep(0.25)

        nursery.start_soon(trickle)
        nursery.start_soon(sample)
        for seed in range(TOTAL // BATCH):
            await producer.enqueue_many(bulk_batch(seed))
            enqueued += BATCH
            await trio.sleep(0.1)
        # A guard against a hang only: on a loaded 2-core machine the workers' own run-log
        # writes (a commit each) make the drain take minutes.
        with trio.fail_after(480):
            while settled_counts(sync_conn)[0]:
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    took = time.monotonic() - started
    with trio.fail_after(60):
        while settled_counts(sync_conn)[0]:  # the last urgent tasks
            await trio.sleep(0.1)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(30) == 0, worker.log()

    totals = check_books(sync_conn)
    # Counted in the table: the enqueue cancelled when the trickle stopped may have committed.
    urgent = count(sync_conn, "SELECT count(*) FROM asynqpg_tasks WHERE type = 'urgent'")
    assert totals.tasks == TOTAL + urgent

    # Memory: bounded, and flat once warm (it does not grow with the tasks processed).
    growth = {}
    for name, samples in rss.items():
        warm = [kib for done, kib in samples if done >= TOTAL // 4]
        assert warm, samples
        growth[name] = (max(warm) - warm[0]) / 1024
        assert max(kib for _, kib in samples) < 200 * 1024, (name, samples)
        assert growth[name] < 25, (name, samples)

    # No starvation: urgent tasks are served promptly through the flood...
    waits = [
        float(w)
        for (w,) in sync_conn.execute(
            "SELECT extract(epoch FROM attempted_at - created_at) FROM asynqpg_tasks"
            " WHERE type = 'urgent'"
        ).fetchall()
    ]
    assert max(waits) < MAX_URGENT_WAIT, sorted(waits)[-5:]
    # ... and the flood is served oldest batch first (each batch shares one created_at).
    medians = [
        float(m)
        for (m,) in sync_conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at))"
            " FROM asynqpg_tasks WHERE type = 'fast' GROUP BY created_at ORDER BY created_at"
        ).fetchall()
    ]
    assert len(medians) == TOTAL // BATCH
    assert medians == sorted(medians), "a later batch was served before an earlier one"
    print(
        f"\nscenario 7: {enqueued} bulk + {urgent} urgent tasks in {took:.1f} s"
        f" ({(enqueued + urgent) / took:.0f}/s), peak backlog {peak_backlog};"
        f" RSS peak {max(k for s in rss.values() for _, k in s) / 1024:.0f} MiB, growth once"
        f" warm {', '.join(f'{n} {g:.1f} MiB' for n, g in growth.items())};"
        f" urgent wait max {max(waits):.2f} s, median {statistics.median(waits):.2f} s;"
        f" {totals}"
    )


def count_completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM asynqpg_tasks WHERE status = 'completed'").fetchone()
    assert row is not None
    return int(row[0])
