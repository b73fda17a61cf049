"""Migration 0008 (autovacuum settings for asynqpg_tasks) on a table in use: it waits for no
writer, rewrites nothing, and leaves the storage parameters a churning queue table needs."""

from __future__ import annotations

from typing import Any

import psycopg

from asynqpg_trio import migrate
from tests.helpers.migrations import migrate_to, relfilenode

EXPECTED = {
    "autovacuum_vacuum_scale_factor=0.01",
    "autovacuum_vacuum_threshold=1000",
    "autovacuum_vacuum_insert_scale_factor=0.05",
    "autovacuum_analyze_scale_factor=0.02",
    "autovacuum_vacuum_cost_delay=1",
}


def _options(conn: psycopg.Connection[Any]) -> set[str]:
    row = conn.execute(
        "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'asynqpg_tasks'::regclass"
    ).fetchone()
    assert row is not None
    return set(row[0])


async def test_upgrade_from_version_7_while_a_writer_holds_its_transaction_open(
    empty_dsn: str,
) -> None:
    assert await migrate_to(empty_dsn, 7) == list(range(1, 8))
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
            " SELECT 'old', 'x', now(), 3 FROM generate_series(1, 1000)"
        )
        before = relfilenode(admin)
        assert not _options(admin) & EXPECTED
        with psycopg.connect(empty_dsn) as writer:
            # A producer's transaction in progress: its lock does not conflict with the
            # migration's, so the migration neither waits for it nor times out.
            writer.execute(
                "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
                " VALUES ('old', 'y', now(), 3)"
            )
            assert await migrate(empty_dsn) == [8]
            writer.commit()
        after, options = relfilenode(admin), _options(admin)
    assert after == before, "the table was rewritten"
    assert options >= EXPECTED
