"""Scenario 5: handlers that misbehave.

Injects, among 1,000 well-behaved tasks, handlers that: raise (plain errors, exception groups,
`SkipRetry`, a 1 MB message, messages with a NUL byte or a lone surrogate, an exception whose
``__str__`` itself raises), hang past their 0.3 s timeout, ignore cancellation for 1 s or for
longer than the lease, block the event loop with ``time.sleep`` (briefly, and once for longer
than the lease), on two consumers sharing the queue.

Checks: neither consumer fails; every failed attempt is written with a bounded, storable
message (at most ``message_limit`` characters); timeouts are reported as such; the books
balance.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest

from asynqpg_trio import (
    ConstantRetryPolicy,
    Task,
    open_consumer,
    open_pool,
    sync,
)

from .books import LEASE_EXPIRED, check_books
from .procs import fast_maintenance
from .workload import ALWAYS, Recorder, Spec, deadlocks, make_handlers, task, wait_settled_async

pytestmark = pytest.mark.faults

ERRORS = ("runtime", "group", "skip", "huge", "nul", "surrogate", "badstr")
LIMIT = 2048
TIMEOUT = 0.3
KINDS = ("fast", "raiser", "flaky", "hang", "stubborn", "blocker")
WORKERS = {"fast": 10, "raiser": 10, "flaky": 10, "hang": 10, "stubborn": 10, "blocker": 2}


def workload() -> list[Task]:
    tasks = [task("fast", Spec()) for _ in range(1000)]
    for i in range(700):
        error = ERRORS[i % len(ERRORS)]
        if error == "skip":
            tasks.append(
                task("raiser", Spec(expect="failed", attempts=3, fail=ALWAYS, error=error))
            )
        else:
            tasks.append(
                task("raiser", Spec(expect="failed", attempts=2, fail=ALWAYS, error=error))
            )
            tasks.append(task("flaky", Spec(attempts=3, fail=1, error=error)))
    tasks += [task("hang", Spec(expect="failed", attempts=2, hang=True)) for _ in range(40)]
    tasks += [task("stubborn", Spec(expect="failed", attempts=2, stubborn=1.0)) for _ in range(30)]
    tasks += [task("stubborn", Spec(expect="failed", attempts=2, stubborn=2.5)) for _ in range(5)]
    tasks += [task("blocker", Spec(block=0.05)) for _ in range(100)]
    tasks.append(task("blocker", Spec(block=2.5)))
    return tasks


async def test_misbehaving_handlers(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    tasks = workload()
    sync.enqueue_many(sync_conn, tasks)
    async with AsyncExitStack() as stack:
        record_pool = await stack.enter_async_context(open_pool(queue_dsn, max_size=10))
        consumers = [
            await stack.enter_async_context(
                open_consumer(
                    queue_dsn,
                    handlers=make_handlers(
                        Recorder(record_pool, name),
                        workers=WORKERS,
                        timeouts={"hang": TIMEOUT, "stubborn": TIMEOUT},
                        kinds=KINDS,
                    ),
                    consumer_id=name,
                    lease_duration=2.0,
                    poll_interval=0.2,
                    message_limit=LIMIT,
                    retry_policy=ConstantRetryPolicy(0.05),
                    maintenance=fast_maintenance(),
                )
            )
            for name in ("H1", "H2")
        ]
        await wait_settled_async(queue_dsn, timeout=60)
    stats = [c.statistics() for c in consumers]

    assert not deadlocks(caplog.records)
    totals = check_books(sync_conn)
    longest = sync_conn.execute(
        "SELECT max(length(m)) FROM asynqpg_tasks, unnest(messages) m"
    ).fetchone()
    assert longest is not None and longest[0] <= LIMIT
    # Each attempt of a hanging or stubborn handler timed out (or, when a blocked event loop
    # let its lease lapse meanwhile, was taken over).
    timeouts = sync_conn.execute(
        "SELECT count(*) FILTER (WHERE m LIKE %s), count(*) FILTER (WHERE m LIKE %s), count(*)"
        " FROM asynqpg_tasks, unnest(messages) m WHERE type IN ('hang', 'stubborn')",
        ("TimeoutError: handler for % timed out after 0.3 s%", LEASE_EXPIRED + "%"),
    ).fetchone()
    assert timeouts is not None and timeouts[0] + timeouts[1] == timeouts[2] == 2 * 75
    assert timeouts[0] > timeouts[1]
    # Each failed attempt stored what the handler raised, escaped or cut as needed (unless a
    # blocked event loop let the lease lapse first).
    for error, pattern in (
        ("huge", "RuntimeError: huge xxx%...[truncated]"),
        ("nul", "RuntimeError: a NUL \\x00 byte on attempt %"),
        ("surrogate", "RuntimeError: a lone surrogate \\ud800 on attempt %"),
        ("badstr", "BadStr: <str() failed: RuntimeError>%"),
        ("group", "ExceptionGroup: planned group on attempt % (2 sub-exceptions)%"),
    ):
        found = sync_conn.execute(
            "SELECT count(*) FILTER (WHERE m LIKE %s ESCAPE ''),"
            " count(*) FILTER (WHERE m LIKE %s), count(*) FROM asynqpg_tasks, unnest(messages) m"
            " WHERE type IN ('raiser', 'flaky')"
            " AND convert_from(payload, 'UTF8')::jsonb ->> 'error' = %s",
            (pattern, LEASE_EXPIRED + "%", error),
        ).fetchone()
        assert found is not None and found[0] + found[1] == found[2], (error, found)
        assert found[0] > found[1], (error, found)
    print(
        f"\nscenario 5: {len(tasks) - 1000} misbehaving tasks"
        f" ({sum(s.stale_acks for s in stats)} stale acks,"
        f" {sum(s.lease_takeovers for s in stats)} takeovers); {totals}"
    )
    assert totals.tasks == len(tasks)
