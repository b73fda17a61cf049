"""The consumer against real PostgreSQL: outcomes, middleware, timeouts, cancel, shutdown,
supervision and multi-process exclusivity."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import trio

from asynqpg_trio import (
    ConfigurationError,
    ConstantRetryPolicy,
    ConsumerError,
    Handler,
    Pool,
    Producer,
    SchemaMissing,
    SkipRetry,
    Task,
    TaskInfo,
    TaskSnooze,
    TaskSnoozeWithError,
    get_task_metadata,
    open_consumer,
    serve_consumer,
)

from .helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}


def row(sync_conn: psycopg.Connection[Any], task_id: int) -> dict[str, Any]:
    cur = sync_conn.execute(
        "SELECT status, attempts_left, attempts_elapsed, messages, lease_token,"
        " blocked_till - updated_at AS wait, finalized_at FROM asynqpg_tasks WHERE id = %s",
        (task_id,),
    )
    values = cur.fetchone()
    assert values is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], values, strict=True))


def count_status(sync_conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(
        sync_conn.execute("SELECT status, count(*) FROM asynqpg_tasks GROUP BY 1").fetchall()
    )


async def test_each_outcome_kind(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    ids = await producer.enqueue_many(
        [
            Task("t", b"ok"),
            Task("t", b"error", max_retry=3),
            Task("t", b"error", max_retry=1),
            Task("t", b"skip", max_retry=5),
            Task("t", b"snooze"),
            Task("t", b"snooze-err", max_retry=3),
            Task("t", b"snooze-err", max_retry=1),
        ]
    )
    seen: list[TaskInfo] = []

    async def handle(task: TaskInfo) -> None:
        seen.append(task)
        if task.payload == b"error":
            raise ValueError("it broke")
        if task.payload == b"skip":
            raise SkipRetry("bad payload")
        if task.payload == b"snooze":
            raise TaskSnooze(600)
        if task.payload == b"snooze-err":
            raise TaskSnoozeWithError(300, "api down")

    async with open_consumer(
        pool, handlers={"t": handle}, retry_policy=ConstantRetryPolicy(120), **FAST
    ) as consumer:
        await wait_until(
            lambda: consumer.statistics().claimed >= 7 and consumer.statistics().in_flight == 0
        )
        stats = consumer.statistics()
    assert (stats.completed, stats.failed, stats.retried, stats.snoozed) == (1, 3, 2, 1)
    ok, err3, err1, skip, snooze, snerr3, snerr1 = (row(sync_conn, i) for i in ids)  # type: ignore[arg-type]
    assert ok["status"] == "completed" and ok["lease_token"] is None and ok["finalized_at"]
    assert (err3["status"], err3["attempts_left"], err3["attempts_elapsed"]) == ("pending", 2, 1)
    assert 119 <= err3["wait"].total_seconds() <= 121  # the retry delay was written
    assert "ValueError: it broke" in err3["messages"][0]
    assert (err1["status"], err1["attempts_left"], err1["attempts_elapsed"]) == ("failed", 0, 1)
    assert (skip["status"], skip["attempts_left"]) == ("failed", 4)
    assert "SkipRetry: bad payload" in skip["messages"][0]
    # Snooze uses no attempt and stores no message.
    assert (snooze["status"], snooze["attempts_left"], snooze["attempts_elapsed"]) == (
        "pending",
        3,
        0,
    )
    assert snooze["messages"] == [] and 599 <= snooze["wait"].total_seconds() <= 601
    assert (snerr3["status"], snerr3["attempts_left"], snerr3["attempts_elapsed"]) == (
        "pending",
        2,
        1,
    )
    assert 299 <= snerr3["wait"].total_seconds() <= 301 and "api down" in snerr3["messages"][0]
    assert snerr1["status"] == "failed"
    # Handlers saw the Go library's counters: nothing elapsed before the first attempt.
    first = next(t for t in seen if t.id == ids[1])
    assert (first.attempts_left, first.attempts_elapsed, first.messages) == (3, 0, ())


async def test_retry_until_failed_then_error_handler(pool: Pool, sync_conn: Any) -> None:
    producer = Producer(pool)
    task_id = await producer.enqueue(Task("flaky", b"", max_retry=3))
    attempts: list[tuple[int, int]] = []
    failures: list[tuple[int, str]] = []

    async def handle(task: TaskInfo) -> None:
        attempts.append((task.attempts_elapsed, task.attempts_left))
        raise RuntimeError(f"attempt {task.attempts_elapsed + 1}")

    async def on_error(task: TaskInfo, error: BaseException) -> None:
        failures.append((task.id, str(error)))

    async with open_consumer(
        pool,
        handlers={"flaky": handle},
        retry_policy=ConstantRetryPolicy(0),
        error_handler=on_error,
        **FAST,
    ):
        await wait_until(lambda: len(failures) == 1)
    assert attempts == [(0, 3), (1, 2), (2, 1)]
    assert failures == [(task_id, "attempt 3")]
    r = row(sync_conn, task_id)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("failed", 0, 3)
    assert [m.splitlines()[0] for m in r["messages"]] == [
        "RuntimeError: attempt 1",
        "RuntimeError: attempt 2",
        "RuntimeError: attempt 3",
    ]


async def test_middleware_order_and_metadata(pool: Pool) -> None:
    await Producer(pool).enqueue(Task("m", b"x", max_retry=4))
    trail: list[str] = []
    metas: list[Any] = []

    def layer(name: str) -> Any:
        def wrap(nxt: Any) -> Any:
            async def run(task: TaskInfo) -> None:
                trail.append(f"{name}>")
                await nxt(task)
                trail.append(f"<{name}")

            return run

        return wrap

    async def handle(task: TaskInfo) -> None:
        trail.append("handler")
        metas.append(get_task_metadata())

    async with open_consumer(
        pool,
        handlers={"m": Handler(handle, middleware=[layer("t1"), layer("t2")])},
        middleware=[layer("g1"), layer("g2")],
        **FAST,
    ) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 1)
    assert trail == ["g1>", "g2>", "t1>", "t2>", "handler", "<t2", "<t1", "<g2", "<g1"]
    (meta,) = metas
    assert (meta.retry_count, meta.max_retry) == (0, 4)
    assert isinstance(meta.created_at, datetime)
    assert get_task_metadata() is None


async def test_timeout_counts_as_failed_attempt(pool: Pool, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("slow", b"", max_retry=2))

    async def handle(task: TaskInfo) -> None:
        await anyio.sleep_forever()

    async with open_consumer(
        pool,
        handlers={"slow": Handler(handle, timeout=0.2)},
        retry_policy=ConstantRetryPolicy(600),
        **FAST,
    ) as consumer:
        await wait_until(lambda: consumer.statistics().retried == 1)
    r = row(sync_conn, task_id)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("pending", 1, 1)
    assert "timed out after 0.2 s" in r["messages"][0]


@pytest.mark.parametrize("then", ["return", "raise"])
async def test_timeout_is_a_failed_attempt_however_the_handler_takes_it(
    pool: Pool, sync_conn: Any, then: str
) -> None:
    """A handler that swallows the timeout's cancellation (and returns, or raises something
    else) still timed out: its work never finished."""
    task_id = await Producer(pool).enqueue(Task("slow", b"", max_retry=2))

    async def handle(task: TaskInfo) -> None:
        try:
            await anyio.sleep_forever()
        except BaseException:
            if then == "return":
                return
            raise ValueError("cleanup failed") from None

    async with open_consumer(
        pool,
        handlers={"slow": Handler(handle, timeout=0.2)},
        retry_policy=ConstantRetryPolicy(600),
        **FAST,
    ) as consumer:
        await wait_until(lambda: consumer.statistics().retried == 1)
    assert consumer.statistics().completed == 0
    r = row(sync_conn, task_id)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("pending", 1, 1)
    assert r["messages"][0].startswith("TimeoutError: handler for 'slow' timed out after 0.2 s")


async def test_shutdown_releases_a_handler_that_swallows_its_cancellation(
    pool: Pool, sync_conn: Any
) -> None:
    task_id = await Producer(pool).enqueue(Task("h", b""))
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except BaseException:
            return

    async with open_consumer(
        pool, handlers={"h": handle}, shutdown_timeout=0.2, **FAST
    ) as consumer:
        await started.wait()
    stats = consumer.statistics()
    assert (stats.released, stats.completed) == (1, 0)
    r = row(sync_conn, task_id)
    assert (r["status"], r["attempts_elapsed"], r["messages"]) == ("pending", 0, [])


async def test_remote_cancel_of_a_handler_that_swallows_it(pool: Pool, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("long", b""))
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except BaseException:
            return

    async with open_consumer(
        pool, handlers={"long": handle}, cancel_check_interval=30, **FAST
    ) as consumer:
        await started.wait()
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET status = 'cancelled', finalized_at = now(),"
            " lease_token = NULL, lease_owner = NULL WHERE id = %s",
            (task_id,),
        )
        sync_conn.execute("SELECT pg_notify('asynqpg_cancel', %s)", (str(task_id),))
        await wait_until(lambda: consumer.statistics().cancelled == 1)
    assert consumer.statistics().completed == 0
    assert row(sync_conn, task_id)["status"] == "cancelled"


async def test_handler_without_a_timeout(pool: Pool, sync_conn: Any) -> None:
    ids = await Producer(pool).enqueue_many([Task("free", b""), Task("bounded", b"")])
    deadlines: dict[str, float] = {}

    async def handle(task: TaskInfo) -> None:
        deadlines[task.type] = trio.current_effective_deadline()

    unbounded = Handler(handle, timeout=None)
    assert unbounded.timeout is None
    async with open_consumer(
        pool, handlers={"free": unbounded, "bounded": handle}, **FAST
    ) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 2)
    assert deadlines["free"] == math.inf
    assert deadlines["bounded"] < math.inf  # the default: 30 s
    assert [row(sync_conn, i)["status"] for i in ids if i is not None] == ["completed"] * 2


async def test_remote_cancel_stops_running_handler(pool: Pool, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("long", b""))
    started = anyio.Event()
    cancelled_at: list[float] = []

    async def handle(task: TaskInfo) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled_at.append(anyio.current_time())

    async with open_consumer(
        pool, handlers={"long": handle}, cancel_check_interval=30, **FAST
    ) as consumer:
        await started.wait()
        t0 = anyio.current_time()
        # What Client.cancel_task does for a running task: cancel the row, then NOTIFY.
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET status = 'cancelled', finalized_at = now(),"
            " lease_token = NULL, lease_owner = NULL WHERE id = %s",
            (task_id,),
        )
        sync_conn.execute("SELECT pg_notify('asynqpg_cancel', %s)", (str(task_id),))
        await wait_until(lambda: bool(cancelled_at), timeout=2)
        assert cancelled_at[0] - t0 < 0.1 + 0.2
        await wait_until(lambda: consumer.statistics().cancelled == 1)
    assert row(sync_conn, task_id)["status"] == "cancelled"


async def test_periodic_check_catches_cancel_without_notify(pool: Pool, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("long", b""))
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        await anyio.sleep_forever()

    async with open_consumer(
        pool, handlers={"long": handle}, cancel_check_interval=0.2, **FAST
    ) as consumer:
        await started.wait()
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET status = 'cancelled', lease_token = NULL WHERE id = %s",
            (task_id,),
        )
        await wait_until(lambda: consumer.statistics().cancelled == 1, timeout=3)
    assert row(sync_conn, task_id)["status"] == "cancelled"


async def test_stale_ack_after_lease_takeover_changes_nothing(pool: Pool, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("s", b""))
    started = anyio.Event()
    proceed = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        await proceed.wait()

    async with open_consumer(
        pool, handlers={"s": handle}, cancel_check_interval=60, lease_duration=300, **FAST
    ) as consumer:
        await started.wait()
        # Another consumer took the task over (its lease expired from the database's view).
        sync_conn.execute(
            "UPDATE asynqpg_tasks SET lease_token = nextval('asynqpg_lease_token_seq'),"
            " lease_owner = 'other' WHERE id = %s",
            (task_id,),
        )
        proceed.set()
        await wait_until(lambda: consumer.statistics().stale_acks == 1)
        assert consumer.statistics().completed == 0
    r = row(sync_conn, task_id)
    assert r["status"] == "running"  # still the other consumer's


async def test_takeover_charges_the_attempt_a_go_consumer_left_running(
    pool: Pool, sync_conn: Any
) -> None:
    """A Go consumer's claim consumes no attempt and sets no lease token: taking such a row
    over charges its dead attempt as well as the new one."""
    rows = [
        sync_conn.execute(
            "INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,"
            " attempts_elapsed, messages) VALUES ('go', %s, 'running',"
            " now() - interval '1 minute', %s, 0, '{}') RETURNING id",
            (payload, left),
        ).fetchone()
        for payload, left in ((b"again", 3), (b"last", 1))
    ]
    again, last = (r[0] for r in rows if r is not None)
    seen: list[TaskInfo] = []

    async def handle(task: TaskInfo) -> None:
        seen.append(task)

    async with open_consumer(pool, handlers={"go": handle}, **FAST) as consumer:
        await wait_until(
            lambda: consumer.statistics().completed + consumer.statistics().takeover_failures == 2
        )
    assert consumer.statistics().lease_takeovers == 2
    (info,) = seen
    # The handler sees one earlier attempt, the one its "lease expired" message is about.
    assert (info.id, info.attempts_elapsed, info.attempts_left) == (again, 1, 2)
    assert len(info.messages) == 1 and info.messages[0].startswith("lease expired")
    r = row(sync_conn, again)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("completed", 1, 2)
    # The dead attempt was the last one: the takeover fails the task, charging it.
    r = row(sync_conn, last)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("failed", 0, 1)
    assert r["messages"][0].startswith("lease expired") and "no attempt left" in r["messages"][0]


def test_poison_pill_ends_failed(dsn: str, sync_conn: Any, tmp_path: Path) -> None:
    """A task that kills its worker process is taken over, consuming attempts, until failed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        from asynqpg_trio import sync

        task_id = sync.enqueue(conn, Task("work", b"poison", max_retry=2))
    out = tmp_path / "runs.txt"
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "tests.helpers.consumer_proc", dsn, "crash", str(out), "30"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 3, proc.stderr
    # A third consumer finds the lease expired and no attempt left: the task fails.
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.consumer_proc", dsn, "record", str(out), "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    r = row(sync_conn, task_id)
    assert (r["status"], r["attempts_left"], r["attempts_elapsed"]) == ("failed", 0, 2)
    assert "no attempt left" in r["messages"][-1]
    assert out.read_text().split() == [str(task_id)] * 2


async def test_graceful_shutdown_releases_and_finishes(pool: Pool, sync_conn: Any) -> None:
    await Producer(pool).enqueue_many([Task("g", b"%d" % i) for i in range(40)])
    started = 0
    finished: Counter[int] = Counter()

    async def handle(task: TaskInfo) -> None:
        nonlocal started
        started += 1
        if task.payload >= b"2":
            await anyio.sleep_forever()  # until the shutdown gives up on it
        await anyio.sleep(0.3)
        finished[task.id] += 1

    async with open_consumer(
        pool,
        handlers={"g": Handler(handle, workers=4)},
        prefetch=10,
        shutdown_timeout=1.0,
        **FAST,
    ) as consumer:
        await wait_until(lambda: started >= 4 and consumer.statistics().claimed >= 14)
    stats = consumer.statistics()
    statuses = count_status(sync_conn)
    assert "running" not in statuses
    assert statuses.get("completed", 0) == sum(finished.values()) == stats.completed
    assert all(n == 1 for n in finished.values())
    # Released tasks used no attempt.
    assert sync_conn.execute(
        "SELECT count(*) FROM asynqpg_tasks WHERE status = 'pending' AND attempts_elapsed > 0"
    ).fetchone() == (0,)
    assert stats.released >= 10
    assert stats.in_flight == 0 and stats.pending_writes == 0


async def test_cancelling_the_host_still_shuts_down_gracefully(pool: Pool, sync_conn: Any) -> None:
    await Producer(pool).enqueue_many([Task("h", b"") for _ in range(10)])

    async def handle(task: TaskInfo) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(1.0):
        async with open_consumer(
            pool, handlers={"h": Handler(handle, workers=3)}, shutdown_timeout=0.2, **FAST
        ):
            await anyio.sleep_forever()
    assert count_status(sync_conn) == {"pending": 10}
    assert sync_conn.execute("SELECT max(attempts_elapsed) FROM asynqpg_tasks").fetchone() == (0,)


async def test_database_connections_killed_mid_run(pool: Pool, sync_conn: Any, dsn: str) -> None:
    n = 2000
    await Producer(pool).enqueue_many([Task("k", b"") for _ in range(n)])
    runs: Counter[int] = Counter()

    async def handle(task: TaskInfo) -> None:
        runs[task.id] += 1
        await anyio.sleep(0.001)

    async with open_consumer(
        pool, handlers={"k": Handler(handle, workers=10)}, lease_duration=2.0, **FAST
    ) as consumer:
        for _ in range(5):
            await anyio.sleep(0.15)
            sync_conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await wait_until(lambda: count_status(sync_conn).get("completed", 0) == n, timeout=60)
        assert consumer.statistics().actor_restarts > 0
    assert count_status(sync_conn) == {"completed": n}
    assert len(runs) == n
    # A task runs twice only when its claim's reply was lost with the connection (then it
    # was taken over after its lease expired); everything else ran exactly once.
    assert sum(runs.values()) - n <= consumer.statistics().lease_takeovers


def test_two_processes_share_a_queue_without_double_runs(dsn: str, tmp_path: Path) -> None:
    n = 10_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        from asynqpg_trio import sync

        sync.enqueue_many(conn, [Task("work", b"") for _ in range(n)])
    outs = [tmp_path / f"p{i}.txt" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.consumer_proc", dsn, "record", str(out), "120"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    ids = [line for out in outs for line in out.read_text().split()]
    assert len(ids) == n
    assert len(set(ids)) == n
    assert all(out.read_text() for out in outs), "both processes should have done some work"
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM asynqpg_tasks WHERE status='completed'"
        ).fetchone() == (n,)


async def test_serve_consumer_with_nursery_start(pool: Pool) -> None:
    await Producer(pool).enqueue(Task("x", b""))
    done = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        done.set()

    async with trio.open_nursery() as nursery:
        consumer = await nursery.start(
            lambda task_status: serve_consumer(
                pool, handlers={"x": handle}, task_status=task_status, **FAST
            )
        )
        await done.wait()
        consumer.stop()


async def test_bad_configuration_is_refused(pool: Pool) -> None:
    async def handle(task: TaskInfo) -> None:
        pass

    with pytest.raises(ConfigurationError, match="workers"):
        Handler(handle, workers=0)
    with pytest.raises(ConfigurationError, match="timeout"):
        Handler(handle, timeout=-1)
    with pytest.raises(ConfigurationError, match="handlers"):
        async with open_consumer(pool, handlers={}):
            pass
    with pytest.raises(ConfigurationError, match="consumer_id"):
        async with open_consumer(pool, handlers={"a": handle}, consumer_id="x" * 200):
            pass


async def test_schema_missing_is_reported(empty_dsn: str) -> None:
    async def handle(task: TaskInfo) -> None:
        pass

    with pytest.raises(SchemaMissing):
        async with open_consumer(empty_dsn, handlers={"a": handle}, maintenance=False):
            pass


async def test_body_exception_propagates_unchanged(pool: Pool) -> None:
    async def handle(task: TaskInfo) -> None:
        pass

    with pytest.raises(KeyError):
        async with open_consumer(pool, handlers={"a": handle}, **FAST):
            raise KeyError("user error")


async def test_internal_bug_surfaces_as_consumer_error(pool: Pool) -> None:
    def broken_layer(nxt: Any) -> Any:
        raise RuntimeError("middleware factory bug")

    async def handle(task: TaskInfo) -> None:
        pass

    with pytest.raises(ConsumerError) as info:
        async with open_consumer(
            pool, handlers={"a": Handler(handle, middleware=[broken_layer])}, **FAST
        ):
            await anyio.sleep_forever()  # until the tree's failure cancels the block
    cause = info.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert cause.subgroup(RuntimeError) is not None
