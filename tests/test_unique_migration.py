"""Migration 0004 (unique tasks) on a database in use: no rewrite, and no duplicate let in while
its index is being built.

Between 0004's transactional part (the columns) and its concurrently built index, nothing in
the table would refuse a duplicate, and a duplicate would make the unique index fail to build
(again at every rerun).  So every insert of unique tasks first asks `asynqpg_unique_ready()`,
which refuses it until the index is valid; plain tasks go in as ever.  The test holds the
build open with a transaction whose snapshot ``CREATE INDEX CONCURRENTLY`` must wait out.
"""

from __future__ import annotations

import psycopg
import pytest
import trio

from asynqpg_trio import LATEST_VERSION, Producer, SchemaMissing, Task, Unique, migrate
from tests.helpers.migrations import migrate_to, relfilenode
from tests.helpers.waiting import wait_until

BUILDING = """
    SELECT 1 FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
      AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_unique_idx%%'
"""


async def test_upgrade_from_version_3_under_way(empty_dsn: str) -> None:
    assert await migrate_to(empty_dsn, 3) == [1, 2, 3]
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
            " SELECT 'old', 'same', now(), 3 FROM generate_series(1, 1000)"
        )
        before = relfilenode(admin)
    producer = Producer(empty_dsn)
    try:
        with psycopg.connect(empty_dsn) as blocker:
            blocker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            blocker.execute("SELECT 1")  # a snapshot the index build must wait for
            async with trio.open_nursery() as nursery:
                nursery.start_soon(migrate, empty_dsn)
                with psycopg.connect(empty_dsn, autocommit=True) as watcher:
                    await wait_until(
                        lambda: watcher.execute(BUILDING).fetchone(), what="the index build"
                    )
                # The columns are there, the index is not valid yet.
                await producer.enqueue(Task("old", b"plain"))
                with pytest.raises(SchemaMissing, match="not built yet"):
                    await producer.enqueue(Task("old", b"", unique=Unique("k")))
                blocker.rollback()  # the build goes on; migrate returns
        first = await producer.enqueue(Task("old", b"", unique=Unique("k")))
        assert await producer.enqueue_many([Task("old", b"", unique=Unique("k"))]) == [None]
    finally:
        await producer.aclose()
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        assert relfilenode(admin) == before, "the table was rewritten"
        assert admin.execute(
            "SELECT indisvalid FROM pg_index"
            " WHERE indexrelid = 'asynqpg_tasks_unique_idx'::regclass"
        ).fetchone() == (True,)
        assert admin.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'asynqpg_tasks_unique_check'"
        ).fetchone() == (True,)
        assert admin.execute(
            "SELECT count(*) FILTER (WHERE unique_key IS NULL), max(id) FROM asynqpg_tasks"
        ).fetchone() == (1001, first)
        assert admin.execute("SELECT max(version) FROM asynqpg_migrations").fetchone() == (
            LATEST_VERSION,
        )
