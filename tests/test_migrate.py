"""Migrations: applied in order, recorded with checksums, safe concurrently, refusing newer."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from asynqpg_trio import (
    LATEST_VERSION,
    SchemaError,
    SchemaMissing,
    SchemaTooNew,
    connect,
    migrate,
)
from asynqpg_trio._pg._migrate import MIGRATIONS, check_schema


def _schema(dsn: str) -> dict[str, Any]:
    """A comparable description of the asynqpg objects in a database."""
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            """SELECT table_name, column_name, data_type, is_nullable, column_default
               FROM information_schema.columns WHERE table_name LIKE 'asynqpg%%'
               ORDER BY 1, 2"""
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'asynqpg%%' ORDER BY 1"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'asynqpg%%' ORDER BY 1"
        ).fetchall()
        unlogged = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'asynqpg%%' AND relpersistence='u'"
        ).fetchall()
    return {"columns": columns, "indexes": indexes, "functions": functions, "unlogged": unlogged}


async def test_migrate_empty_database_matches_declared_schema(empty_dsn: str, dsn: str) -> None:
    applied = await migrate(empty_dsn)
    assert applied == list(range(1, LATEST_VERSION + 1))
    # `dsn` was built by the fixtures from the migration files directly: same schema.
    assert _schema(empty_dsn) == _schema(dsn)
    cols = {c[1] for c in _schema(empty_dsn)["columns"] if c[0] == "asynqpg_tasks"}
    go_columns = {
        "id",
        "type",
        "idempotency_token",
        "payload",
        "status",
        "messages",
        "blocked_till",
        "attempts_left",
        "attempts_elapsed",
        "created_at",
        "updated_at",
        "finalized_at",
        "attempted_at",
    }
    assert go_columns <= cols
    assert ("asynqpg_leader",) in _schema(empty_dsn)["unlogged"]


async def test_migrate_is_idempotent(empty_dsn: str) -> None:
    assert await migrate(empty_dsn) != []
    assert await migrate(empty_dsn) == []


async def test_check_schema(empty_dsn: str) -> None:
    conn = await connect(empty_dsn)
    try:
        with pytest.raises(SchemaMissing, match="asynqpg-trio migrate"):
            await check_schema(conn)
        await migrate(empty_dsn)
        await check_schema(conn)
    finally:
        await conn.close()


async def test_newer_schema_refused(empty_dsn: str) -> None:
    await migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO asynqpg_migrations (version, name, checksum) VALUES (%s, 'future', 'x')",
            (LATEST_VERSION + 1,),
        )
    with pytest.raises(SchemaTooNew, match="upgrade the asynqpg-trio package"):
        await migrate(empty_dsn)
    conn = await connect(empty_dsn)
    try:
        with pytest.raises(SchemaTooNew):
            await check_schema(conn)
    finally:
        await conn.close()


async def test_changed_migration_text_refused(empty_dsn: str) -> None:
    await migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute("UPDATE asynqpg_migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(SchemaError, match="different text"):
        await migrate(empty_dsn)


def test_four_processes_migrate_at_once(empty_dsn: str) -> None:
    code = "import sys, trio, asynqpg_trio; print(trio.run(asynqpg_trio.migrate, sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    results = sorted(out.strip() for out, _ in outputs)
    # Exactly one process applied everything; the others found nothing to do.
    assert results == sorted(["[]"] * 3 + [str(list(range(1, LATEST_VERSION + 1)))])
    with psycopg.connect(empty_dsn) as c:
        rows = c.execute("SELECT version, checksum FROM asynqpg_migrations ORDER BY 1").fetchall()
    assert rows == [(m.version, m.checksum) for m in MIGRATIONS]
