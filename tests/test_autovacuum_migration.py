"""Migration 0008 (autovacuum settings for asynqpg_tasks) on a table in use: it waits for no
writer, rewrites nothing, and leaves the storage parameters a churning queue table needs."""

from __future__ import annotations

from typing import Any

import psycopg

from asynqpg_trio import connect, migrate
from asynqpg_trio._pg._migrate import MIGRATIONS, migrate_conn

EXPECTED = {
    "autovacuum_vacuum_scale_factor=0.01",
    "autovacuum_vacuum_threshold=1000",
    "autovacuum_vacuum_insert_scale_factor=0.05",
    "autovacuum_analyze_scale_factor=0.02",
    "autovacuum_vacuum_cost_delay=1",
}


def _state(conn: psycopg.Connection[Any]) -> tuple[int, set[str]]:
    row = conn.execute(
        "SELECT pg_relation_filenode('asynqpg_tasks'), coalesce(reloptions, '{}')"
        " FROM pg_class WHERE oid = 'asynqpg_tasks'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), set(row[1])


async def test_upgrade_from_version_7_while_a_writer_holds_its_transaction_open(
    empty_dsn: str,
) -> None:
    version_7 = [m for m in MIGRATIONS if m.version <= 7]
    conn = await connect(empty_dsn)
    try:
        assert await migrate_conn(conn, migrations=version_7) == list(range(1, 8))
    finally:
        await conn.close()
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
            " SELECT 'old', 'x', now(), 3 FROM generate_series(1, 1000)"
        )
        before, options = _state(admin)
        assert not options & EXPECTED
        with psycopg.connect(empty_dsn) as writer:
            # A producer's transaction in progress: its lock does not conflict with the
            # migration's, so the migration neither waits for it nor times out.
            writer.execute(
                "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)"
                " VALUES ('old', 'y', now(), 3)"
            )
            assert await migrate(empty_dsn) == [8]
            writer.commit()
        after, options = _state(admin)
    assert after == before, "the table was rewritten"
    assert options >= EXPECTED
