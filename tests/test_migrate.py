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
from asynqpg_trio._pg._migration_files import Migration, Step, split_steps


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
    # Every other test runs on a clone of the fixtures' template, which `migrate` built too:
    # whatever path built it, it is the schema users get.
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


# --- The file syntax (pure: no database) ---------------------------------------------------


def test_a_file_without_directives_is_one_transaction() -> None:
    (first,) = MIGRATIONS[0].steps
    assert first == Step(MIGRATIONS[0].sql, in_transaction=True)


def test_sections_split_into_steps() -> None:
    text = """-- version N: a column, two indexes, a constraint using one of them.
ALTER TABLE t ADD COLUMN a int;
ALTER TABLE t ADD COLUMN b int;

-- asynqpg: concurrently
-- comment lines are ignored
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS Public.T_A_Idx
    ON t (a);
CREATE INDEX CONCURRENTLY IF NOT EXISTS t_b_idx ON t (b) WHERE b > 0;
-- asynqpg: transaction
ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE USING INDEX t_a_idx;
"""
    steps = split_steps(text)
    assert [(s.in_transaction, s.index) for s in steps] == [
        (True, None),
        (False, "public.t_a_idx"),
        (False, "t_b_idx"),
        (True, None),
    ]
    assert steps[0].sql.startswith("-- version N") and steps[0].sql.endswith("b int;\n\n")
    assert (
        steps[1].sql
        == "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS Public.T_A_Idx\n    ON t (a)"
    )
    assert steps[2].sql.endswith("WHERE b > 0")
    # A file may start with its concurrently section: no empty transaction first.
    (only,) = split_steps("-- asynqpg: concurrently\nDROP INDEX CONCURRENTLY IF EXISTS x;\n")
    assert only == Step("DROP INDEX CONCURRENTLY IF EXISTS x", in_transaction=False)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("-- asynqpg: concurrently\nCREATE INDEX CONCURRENTLY i ON t (a);", "IF NOT EXISTS"),
        ("-- asynqpg: concurrently\nCREATE INDEX CONCURRENTLY ON t (a);", "IF NOT EXISTS"),
        (
            '-- asynqpg: concurrently\nCREATE INDEX CONCURRENTLY IF NOT EXISTS "I" ON t (a);',
            "plain",
        ),
        ("-- asynqpg: concurrently\nDROP INDEX CONCURRENTLY a; DROP INDEX CONCURRENTLY b;", "one"),
        ("-- asynqpg: concurrently\nDROP INDEX CONCURRENTLY IF EXISTS a", "closing ';'"),
        ("SELECT 1;\n-- asynqpg: concurrently\n-- nothing\n", "without statements"),
        ("SELECT 1;\n-- asynqpg: concurrent\nCREATE INDEX i ON t (a);", "unknown directive"),
        ("-- only a comment\n", "no statements"),
    ],
)
def test_malformed_files_are_refused_when_loaded(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Migration(9, "bad", text)
