"""Scenario 6: bad input at every public edge.

Injects: tasks with invalid fields (alone and inside otherwise good batches, through the async
producer and the sync functions); payloads of 0 bytes and of 10 MB and task types with
unusual characters (which are valid, and must round-trip); malformed and unreachable DSNs; a
database without the schema; a schema newer than the package; rows written by hand that no
producer would write (a running row without a lease token, negative counters, infinite
times, junk trace context); a retry policy that returns nonsense.

Checks: every refusal is an error of our own type (`InvalidTask`, `ConfigurationError`,
`ConnectionFailed`, `SchemaMissing`, `SchemaTooNew`) that says what is wrong, raised before
anything is written; valid oddities round-trip byte for byte and their books balance; the
consumer never fails on a row it finds in the table, and each such row ends somewhere
definite.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from asynqpg_trio import (
    LATEST_VERSION,
    Client,
    ConfigurationError,
    DuplicateTask,
    Handler,
    InvalidTask,
    Producer,
    SchemaMissing,
    SchemaTooNew,
    SkipRetry,
    Task,
    TaskInfo,
    TaskSnooze,
    TaskSnoozeWithError,
    migrate,
    open_consumer,
    open_pool,
    sync,
)
from asynqpg_trio._core._errors import ConnectionFailed

from .bad_input import (
    BAD_TASKS,
    MALFORMED,
    ODD_TYPES,
    TEN_MB,
    NonsensePolicy,
    insert_row,
)
from .books import LEASE_EXPIRED, Expectation, check_books
from .workload import Recorder, count, wait_settled_async

pytestmark = pytest.mark.faults

FAST: dict[str, Any] = {"poll_interval": 0.1, "lease_duration": 2.0, "maintenance": False}


async def _never(task: TaskInfo) -> None:
    raise AssertionError("no task should run")


def tasks_count(conn: psycopg.Connection[Any]) -> int:
    return count(conn, "SELECT count(*) FROM asynqpg_tasks")


async def wait_quiet(conn: psycopg.Connection[Any], task_type: str) -> None:
    """Wait until no task of ``task_type`` is running or ready to be claimed."""
    with anyio.fail_after(20):
        while count(
            conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE type = %s"
            " AND (status = 'running' OR (status = 'pending' AND blocked_till <= now()))",
            task_type,
        ):
            await anyio.sleep(0.05)


@pytest.mark.parametrize(("bad", "message"), BAD_TASKS)
async def test_invalid_task_is_refused_and_nothing_is_written(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], bad: Any, message: str
) -> None:
    good = Task("t", b"ok")
    async with Producer(queue_dsn) as producer:
        with pytest.raises(InvalidTask, match=message):
            await producer.enqueue(bad)
        with pytest.raises(InvalidTask, match=f"task at index 1: {message}") as caught:
            await producer.enqueue_many([good, bad, good])
        assert caught.value.index == 1
    with pytest.raises(InvalidTask, match=message):
        sync.enqueue(sync_conn, bad)
    with pytest.raises(InvalidTask, match=f"task at index 2: {message}"):
        sync.enqueue_many(sync_conn, [good, good, bad])
    assert tasks_count(sync_conn) == 0


async def test_odd_payloads_and_type_names_round_trip(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    tasks = [Task(t, p) for t in ODD_TYPES for p in (b"", b"\x00\xff\xfe binary \x00")]
    tasks.append(Task(ODD_TYPES[1], TEN_MB))
    tasks.append(Task(ODD_TYPES[2], b"", idempotency_token='tök\'en "1" 📧'))
    async with Producer(queue_dsn) as producer:
        ids = await producer.enqueue_many(tasks)
        with pytest.raises(DuplicateTask) as duplicate:
            await producer.enqueue(tasks[-1])
        assert duplicate.value.existing_id == ids[-1]
    digests = {i: hashlib.sha256(t.payload).hexdigest() for i, t in zip(ids, tasks, strict=True)}

    async with open_pool(queue_dsn, max_size=4) as record_pool:
        recorder = Recorder(record_pool, "odd")

        async def check(task: TaskInfo) -> None:
            if hashlib.sha256(task.payload).hexdigest() != digests[task.id]:
                raise SkipRetry(f"payload of task {task.id} arrived changed")
            await recorder.record(task.id, task.attempts_elapsed + 1, "ok")

        async with open_consumer(
            queue_dsn, handlers={t: Handler(check, workers=2) for t in ODD_TYPES}, **FAST
        ):
            await wait_settled_async(queue_dsn, timeout=60)

    async with Client(queue_dsn) as client:
        for task_id, task in zip(ids, tasks, strict=True):
            assert task_id is not None
            record = await client.get_task(task_id)
            assert (record.type, record.payload) == (task.type, task.payload)
    totals = check_books(sync_conn, expect=lambda row: Expectation("completed", 3))
    print(f"\nscenario 6, odd payloads and types: {totals}")
    assert totals.tasks == len(tasks)


MALFORMED_DSN = "this is not a dsn"


async def test_malformed_dsn_is_refused_before_any_io() -> None:
    with pytest.raises(ConfigurationError, match="DSN"):
        Producer(MALFORMED_DSN)
    with pytest.raises(ConfigurationError, match="DSN"):
        Client(MALFORMED_DSN)
    with pytest.raises(ConfigurationError, match="DSN"):
        async with open_pool(MALFORMED_DSN):
            pass
    with pytest.raises(ConfigurationError, match="DSN"):
        await migrate(MALFORMED_DSN)
    with pytest.raises(ConfigurationError, match="DSN"):
        async with open_consumer(MALFORMED_DSN, handlers={"t": Handler(_never)}):
            pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"handlers": {"a\x00b": _never}}, "task type must be text without NUL"),
        ({"handlers": {"\ud800": _never}}, "task type must be text without NUL"),
        ({"handlers": {"t": _never}, "consumer_id": "c\x00"}, "consumer_id must be text"),
        ({"handlers": {"t": _never}, "consumer_id": "\udfff"}, "consumer_id must be text"),
        ({"handlers": {}}, "handlers must be a non-empty dict"),
        ({"handlers": {"t": _never}, "lease_duration": math.nan}, "lease_duration must be"),
        ({"handlers": {"t": _never}, "maintenance": "yes"}, "maintenance must be True"),
    ],
)
async def test_consumer_settings_are_checked_before_any_io(
    queue_dsn: str, sync_conn: psycopg.Connection[Any], options: dict[str, Any], message: str
) -> None:
    sync.enqueue(sync_conn, Task("t", b""))
    with pytest.raises(ConfigurationError, match=message):
        async with open_consumer(queue_dsn, **options):
            pass
    assert count(sync_conn, "SELECT count(*) FROM asynqpg_tasks WHERE status = 'pending'") == 1


async def test_unreachable_database_is_reported_as_such(server_dsn: str) -> None:
    no_database = psycopg.conninfo.make_conninfo(server_dsn, dbname="asynqpg_no_such_db")
    with pytest.raises(ConnectionFailed, match='database "asynqpg_no_such_db" does not exist'):
        async with open_consumer(no_database, handlers={"t": Handler(_never)}):
            pass
    refused = "host=127.0.0.1 port=1 user=postgres dbname=postgres"
    with pytest.raises(ConnectionFailed, match="port 1 failed"):
        async with open_pool(refused, min_size=0, reconnect_timeout=0.1) as pool:
            await Producer(pool).enqueue(Task("t", b""))
    with pytest.raises(ConnectionFailed, match="port 1 failed"):
        async with open_pool(refused, min_size=1, reconnect_timeout=0.1):
            pass
    # It is still a psycopg OperationalError, for code that catches those.
    with pytest.raises(psycopg.OperationalError):
        async with open_pool(refused, min_size=1, reconnect_timeout=0.1):
            pass


async def test_database_without_schema(empty_dsn: str) -> None:
    with pytest.raises(SchemaMissing, match="asynqpg-trio migrate"):
        async with open_consumer(empty_dsn, handlers={"t": Handler(_never)}):
            pass
    async with Producer(empty_dsn) as producer:
        with pytest.raises(SchemaMissing, match="asynqpg-trio migrate"):
            await producer.enqueue(Task("t", b""))
    async with Client(empty_dsn) as client:
        with pytest.raises(SchemaMissing):
            await client.stats()
        with pytest.raises(SchemaMissing):
            await client.get_task(1)
        with pytest.raises(SchemaMissing):
            await client.list_tasks()
        with pytest.raises(SchemaMissing):
            await client.cancel_task(1)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        with pytest.raises(SchemaMissing):
            sync.enqueue(conn, Task("t", b""))
        # Nothing was created on the way.
        assert conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public'"
        ).fetchone() == (0,)


async def test_schema_newer_than_the_package(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    sync.enqueue_many(sync_conn, [Task("t", b"") for _ in range(5)])
    sync_conn.execute(
        "INSERT INTO asynqpg_migrations (version, name, checksum) VALUES (%s, 'future', 'x')",
        (LATEST_VERSION + 1,),
    )
    with pytest.raises(SchemaTooNew, match="upgrade the asynqpg-trio package"):
        async with open_consumer(queue_dsn, handlers={"t": Handler(_never)}, **FAST):
            pass
    with pytest.raises(SchemaTooNew):
        await migrate(queue_dsn)
    assert (
        count(
            sync_conn,
            "SELECT count(*) FROM asynqpg_tasks WHERE status = 'pending' AND attempts_elapsed = 0",
        )
        == 5
    )
    assert count(sync_conn, "SELECT count(*) FROM asynqpg_leader") == 0
    assert count(sync_conn, "SELECT max(version) FROM asynqpg_migrations") == LATEST_VERSION + 1


async def test_malformed_rows_never_break_the_consumer(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    ids = {name: insert_row(sync_conn, columns) for name, columns, _ in MALFORMED}
    seen: list[int] = []

    async def hand(task: TaskInfo) -> None:
        seen.append(task.id)
        if task.payload == b"fail":
            raise RuntimeError("fails once its counters are odd")

    # The default retry policy: it must cope with the attempt numbers such rows produce.
    async with open_consumer(queue_dsn, handlers={"hand": hand}, **FAST) as consumer:
        await wait_quiet(sync_conn, "hand")
    stats = consumer.statistics()

    for name, _, expected in MALFORMED:
        row = sync_conn.execute(
            "SELECT status, lease_token FROM asynqpg_tasks WHERE id = %s", (ids[name],)
        ).fetchone()
        assert row == (expected, None), (name, row)
    async with Client(queue_dsn) as client:
        for task_id in ids.values():
            await client.get_task(task_id)
        page = await client.list_tasks(limit=100)
        assert page.total == len(MALFORMED)
        await client.stats()
    go_row = ids[MALFORMED[0][0]]
    messages = sync_conn.execute(
        "SELECT messages FROM asynqpg_tasks WHERE id = %s", (go_row,)
    ).fetchone()
    assert messages is not None and messages[0][0].startswith(LEASE_EXPIRED)
    print(
        f"\nscenario 6, malformed rows: {len(MALFORMED)} rows, {stats.claimed} claims,"
        f" {stats.takeover_failures} takeover failures, {len(seen)} runs"
    )


async def test_task_parked_until_infinity(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    """The only task is blocked till 'infinity': the fetcher, asking when it becomes ready,
    must sleep its poll interval rather than fail on the timestamp arithmetic."""
    task_id = insert_row(sync_conn, {"blocked_till": "'infinity'"})
    async with open_consumer(queue_dsn, handlers={"hand": _never}, **FAST) as consumer:
        await anyio.sleep(0.5)  # several fetch cycles at the 0.1 s poll interval
    assert consumer.statistics().actor_restarts == 0
    row = sync_conn.execute(
        "SELECT status, attempts_elapsed FROM asynqpg_tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row == ("pending", 0)
    # (The client cannot show this row: Python's datetime has no infinity, and psycopg says
    # so with DataError "timestamp too large".)


async def test_retry_policy_returning_nonsense(
    queue_dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    sync.enqueue_many(sync_conn, [Task("f", b"", max_retry=6) for _ in range(10)])
    sync.enqueue_many(sync_conn, [Task("s", b"", max_retry=6) for _ in range(2)])

    async def fail(task: TaskInfo) -> None:
        raise RuntimeError("planned")

    async def snooze(task: TaskInfo) -> None:
        if task.attempts_elapsed == 0:
            raise TaskSnoozeWithError(1e300, "back in a googol years")
        raise TaskSnooze(1e300)

    policy = NonsensePolicy()
    async with open_consumer(
        queue_dsn, handlers={"f": fail, "s": snooze}, retry_policy=policy, **FAST
    ):
        await wait_quiet(sync_conn, "f")
        await wait_quiet(sync_conn, "s")
    # Every retry was written: a nonsense delay counts as no delay (NaN, negative) or as the
    # longest one (infinite, too large), and every task now waits or has failed for good.
    assert policy.calls >= 10
    rows = sync_conn.execute("SELECT status, blocked_till FROM asynqpg_tasks").fetchall()
    far = datetime.now(UTC) + timedelta(days=400)
    assert all(
        status == "failed" or (status == "pending" and blocked_till < far)
        for status, blocked_till in rows
    ), rows
