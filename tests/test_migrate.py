"""Migrations: applied in order, recorded with checksums, safe concurrently, refusing newer;
statements run outside a transaction, resumed and repaired after a failure, bounded lock waits.

The tests of ``concurrently`` sections give `migrate_conn` a migration set of their own: the
package's migrations plus one test-only version after them (never shipped).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from asynqpg_trio import (
    LATEST_VERSION,
    ConfigurationError,
    MigrationBlocked,
    SchemaError,
    SchemaMissing,
    SchemaTooNew,
    connect,
    migrate,
)
from asynqpg_trio._pg._migrate import _LOCK_KEY, MIGRATIONS, check_schema, migrate_conn
from asynqpg_trio._pg._migration_files import Migration, Step, split_steps

from .helpers.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from asynqpg_trio._pg._conn import Connection


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


def _documented_example() -> str:
    """The example migration of ``_migrate.py``'s docstring: the indented block after ``::``."""
    import textwrap

    import asynqpg_trio._pg._migrate as module

    doc = module.__doc__ or ""
    after = doc[doc.index("writes through)::") :].splitlines()[2:]
    block = []
    for line in after:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def test_the_documented_example_parses() -> None:
    steps = split_steps(_documented_example())
    assert [(s.in_transaction, s.index) for s in steps] == [
        (True, None),
        (False, "asynqpg_tasks_rank_idx"),
        (False, None),
    ]


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


# --- Statements outside a transaction, against real PostgreSQL -----------------------------

#: The version a test-only migration gets: one past the package's own.
TEST_VERSION = LATEST_VERSION + 1


def _set(text: str) -> tuple[Migration, ...]:
    """The package's migrations and one test-only version with ``text``."""
    return (*MIGRATIONS, Migration(TEST_VERSION, "test_only", text))


#: A column (constant default: no rewrite) and a unique index built concurrently on it.  The
#: column is added without IF NOT EXISTS: applied twice, the section would fail.
UNIQUE_COLUMN = """ALTER TABLE asynqpg_tasks ADD COLUMN test_key text NOT NULL DEFAULT 'k';

-- asynqpg: concurrently
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_test_key_idx
    ON asynqpg_tasks (type, test_key);
"""


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Connection[Any]]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


def _add_tasks(sync_conn: psycopg.Connection[Any], *types: str) -> None:
    for task_type in types:
        sync_conn.execute(
            """INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left)
               VALUES (%s, ''::bytea, now(), 1)""",
            (task_type,),
        )


def _index(sync_conn: psycopg.Connection[Any], name: str) -> tuple[bool, str] | None:
    """``(valid, definition)`` of an index, None if there is none."""
    row = sync_conn.execute(
        """SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i
           WHERE i.indexrelid = to_regclass(%s)""",
        (name,),
    ).fetchone()
    return None if row is None else (bool(row[0]), str(row[1]))


def _state(sync_conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    """The test version's bookkeeping: its ``asynqpg_migrations`` and progress rows."""
    recorded = sync_conn.execute(
        "SELECT version FROM asynqpg_migrations WHERE version = %s", (TEST_VERSION,)
    ).fetchall()
    progress = sync_conn.execute(
        "SELECT version, steps_done FROM asynqpg_migration_progress"
    ).fetchall()
    return recorded, progress


def _has_column(sync_conn: psycopg.Connection[Any], column: str) -> bool:
    return bool(
        sync_conn.execute(
            """SELECT 1 FROM information_schema.columns
               WHERE table_name = 'asynqpg_tasks' AND column_name = %s""",
            (column,),
        ).fetchall()
    )


async def test_a_concurrently_section_builds_the_index_outside_a_transaction(
    conn: Connection[Any], sync_conn: psycopg.Connection[Any]
) -> None:
    _add_tasks(sync_conn, "a", "b", "c")
    migrations = _set(UNIQUE_COLUMN)
    # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block: success says it
    # ran outside one.
    assert await migrate_conn(conn, migrations=migrations) == [TEST_VERSION]
    valid, definition = _index(sync_conn, "asynqpg_tasks_test_key_idx") or (False, "")
    assert valid
    assert "UNIQUE INDEX asynqpg_tasks_test_key_idx" in definition
    assert _state(sync_conn) == ([(TEST_VERSION,)], [])
    (checksum,) = sync_conn.execute(
        "SELECT checksum FROM asynqpg_migrations WHERE version = %s", (TEST_VERSION,)
    ).fetchone() or ("",)
    assert checksum == migrations[-1].checksum
    assert await migrate_conn(conn, migrations=migrations) == []


async def test_the_documented_example_applies(
    conn: Connection[Any], sync_conn: psycopg.Connection[Any]
) -> None:
    _add_tasks(sync_conn, "a", "b")
    assert await migrate_conn(conn, migrations=_set(_documented_example())) == [TEST_VERSION]
    valid, _ = _index(sync_conn, "asynqpg_tasks_rank_idx") or (False, "")
    assert valid
    assert sync_conn.execute(
        "SELECT convalidated FROM pg_constraint WHERE conname = 'rank_check'"
    ).fetchall() == [(True,)]


async def test_a_rerun_resumes_after_a_failed_concurrent_build_and_rebuilds_the_index(
    conn: Connection[Any], sync_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_tasks(sync_conn, "a", "a")  # two rows with one (type, test_key): no unique index
    migrations = _set(UNIQUE_COLUMN)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await migrate_conn(conn, migrations=migrations)
    # Half done: the column is there, the index is left INVALID, the version not recorded,
    # the first of its two steps recorded as progress.
    assert _has_column(sync_conn, "test_key")
    assert _index(sync_conn, "asynqpg_tasks_test_key_idx") == (
        False,
        "CREATE UNIQUE INDEX asynqpg_tasks_test_key_idx ON public.asynqpg_tasks "
        "USING btree (type, test_key)",
    )
    assert _state(sync_conn) == ([], [(TEST_VERSION, 1)])
    # A package shipping the test version sees it as missing.
    monkeypatch.setattr("asynqpg_trio._pg._migrate.MIGRATIONS", migrations)
    with pytest.raises(SchemaMissing, match=f"lacks schema versions \\[{TEST_VERSION}\\]"):
        await check_schema(conn)

    sync_conn.execute("DELETE FROM asynqpg_tasks WHERE id = (SELECT max(id) FROM asynqpg_tasks)")
    # The rerun does not add the column again (it would fail): it resumes at the index, which
    # IF NOT EXISTS alone would take as built, and rebuilds it.
    assert await migrate_conn(conn, migrations=migrations) == [TEST_VERSION]
    valid, _ = _index(sync_conn, "asynqpg_tasks_test_key_idx") or (False, "")
    assert valid
    assert _state(sync_conn) == ([(TEST_VERSION,)], [])
    await check_schema(conn)


async def test_an_invalid_index_left_by_a_dead_run_is_rebuilt(
    conn: Connection[Any], sync_conn: psycopg.Connection[Any]
) -> None:
    # What a run that died during the build leaves, made by hand: no progress recorded, an
    # invalid index of the right name (here unique, where the migration's is not).
    _add_tasks(sync_conn, "a", "a")
    with pytest.raises(psycopg.errors.UniqueViolation):
        sync_conn.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY asynqpg_tasks_test_type_idx ON asynqpg_tasks (type)"
        )
    assert _index(sync_conn, "asynqpg_tasks_test_type_idx") is not None
    migrations = _set(
        "-- asynqpg: concurrently\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_test_type_idx\n"
        "    ON asynqpg_tasks (type);\n"
    )
    assert await migrate_conn(conn, migrations=migrations) == [TEST_VERSION]
    assert _index(sync_conn, "asynqpg_tasks_test_type_idx") == (
        True,
        "CREATE INDEX asynqpg_tasks_test_type_idx ON public.asynqpg_tasks USING btree (type)",
    )
    assert _state(sync_conn) == ([(TEST_VERSION,)], [])


def _activity(sync_conn: psycopg.Connection[Any], pid: int) -> tuple[str, str]:
    """Backend ``pid``'s wait event type ('' if not waiting) and its current or last query."""
    row = sync_conn.execute(
        "SELECT coalesce(wait_event_type, ''), query FROM pg_stat_activity WHERE pid = %s",
        (pid,),
    ).fetchone()
    return ("", "") if row is None else (str(row[0]), str(row[1]))


async def test_a_cancelled_concurrent_build_is_rebuilt_by_the_next_run(
    dsn: str, conn: Connection[Any], sync_conn: psycopg.Connection[Any]
) -> None:
    migrations = _set(
        "-- asynqpg: concurrently\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_test_type_idx\n"
        "    ON asynqpg_tasks (type);\n"
    )
    # A writer in an open transaction: the build commits its (invalid) index, then waits for it.
    with psycopg.connect(dsn) as writer:
        _add_tasks(writer, "a")  # not committed
        pid = conn.pgconn.backend_pid
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(migrate_conn, conn, migrations=migrations))
                await wait_until(
                    lambda: (
                        _activity(sync_conn, pid)[0] == "Lock"
                        and _activity(sync_conn, pid)[1].startswith("CREATE INDEX CONCURRENTLY")
                    ),
                    what="the index build waiting for the open transaction",
                )
                scope.cancel()
        writer.rollback()
    assert _index(sync_conn, "asynqpg_tasks_test_type_idx") == (
        False,
        "CREATE INDEX asynqpg_tasks_test_type_idx ON public.asynqpg_tasks USING btree (type)",
    )
    assert _state(sync_conn) == ([], [])
    # The cancelled run released the migration lock: another session takes it at once.
    (took,) = sync_conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone() or (
        False,
    )
    assert took
    sync_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    other = await connect(dsn)
    try:
        assert await migrate_conn(other, migrations=migrations) == [TEST_VERSION]
    finally:
        await other.close()
    assert _index(sync_conn, "asynqpg_tasks_test_type_idx") == (
        True,
        "CREATE INDEX asynqpg_tasks_test_type_idx ON public.asynqpg_tasks USING btree (type)",
    )


async def test_two_migrators_at_once_both_succeed_and_apply_once(
    dsn: str, sync_conn: psycopg.Connection[Any]
) -> None:
    _add_tasks(sync_conn, "a", "b")
    migrations = _set(UNIQUE_COLUMN)
    results: list[list[int]] = []

    async def run(c: Connection[Any]) -> None:
        results.append(await migrate_conn(c, migrations=migrations))

    # A third session holds the migration lock until both migrators have tried to take it, so
    # that they really run at once; the loser then polls while the winner builds the index
    # concurrently (a waiter blocked in the server would deadlock with that build).
    sync_conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    first, second = await connect(dsn), await connect(dsn)
    try:
        async with trio.open_nursery() as nursery:
            for c in (first, second):
                nursery.start_soon(run, c)
            for c in (first, second):
                pid = c.pgconn.backend_pid
                await wait_until(
                    lambda: "advisory_lock" in _activity(sync_conn, pid)[1],
                    what=f"backend {pid} trying the migration lock",
                )
            sync_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    finally:
        await first.close()
        await second.close()
    assert sorted(results) == [[], [TEST_VERSION]]
    assert _state(sync_conn) == ([(TEST_VERSION,)], [])
    valid, _ = _index(sync_conn, "asynqpg_tasks_test_key_idx") or (False, "")
    assert valid


@pytest.mark.parametrize("mode", ["SHARE", "ACCESS EXCLUSIVE"])
async def test_a_table_lock_held_elsewhere_stops_migrate_with_a_clear_error(
    dsn: str, conn: Connection[Any], sync_conn: psycopg.Connection[Any], mode: str
) -> None:
    migrations = _set(UNIQUE_COLUMN)
    with psycopg.connect(dsn) as holder:
        holder.execute(f"LOCK TABLE asynqpg_tasks IN {mode} MODE".encode())
        with pytest.raises(MigrationBlocked, match="could not lock the tables") as caught:
            await migrate_conn(conn, migrations=migrations, lock_timeout=0.05, attempts=2)
        holder.rollback()
    message = str(caught.value)
    assert "2 attempts each waited lock_timeout=0.05 s" in message
    assert "pg_stat_activity" in message
    assert "run `asynqpg-trio migrate` again" in message
    assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
    # Nothing of the version was applied or recorded.
    assert not _has_column(sync_conn, "test_key")
    assert _state(sync_conn) == ([], [])
    # The lock released, the next run applies it.
    assert await migrate_conn(conn, migrations=migrations) == [TEST_VERSION]
    assert _has_column(sync_conn, "test_key")


async def test_progress_recorded_for_another_text_is_refused(
    conn: Connection[Any], sync_conn: psycopg.Connection[Any]
) -> None:
    sync_conn.execute(
        """INSERT INTO asynqpg_migration_progress (version, checksum, steps_done)
           VALUES (%s, 'another text', 1)""",
        (TEST_VERSION,),
    )
    with pytest.raises(SchemaError, match="partly applied from a different text"):
        await migrate_conn(conn, migrations=_set(UNIQUE_COLUMN))
    assert not _has_column(sync_conn, "test_key")


async def test_migrate_conn_refuses_what_it_cannot_use(dsn: str, conn: Connection[Any]) -> None:
    with pytest.raises(ConfigurationError, match="lock_timeout"):
        await migrate_conn(conn, lock_timeout=0)
    with pytest.raises(ConfigurationError, match="attempts"):
        await migrate_conn(conn, attempts=0)
    in_transactions = await connect(dsn, autocommit=False)
    try:
        with pytest.raises(ConfigurationError, match="autocommit"):
            await migrate_conn(in_transactions)
    finally:
        await in_transactions.close()
