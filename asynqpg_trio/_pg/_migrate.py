"""Schema migrations: numbered ``.sql`` files applied in order under an advisory lock.

Theory of operation
-------------------
Each file ``migrations/NNNN_name.sql`` is one version, recorded with the checksum of its text
in ``asynqpg_migrations`` once all of it is applied.  `migrate` takes a session-level advisory
lock for the whole run (so any number of processes may run it at once: the first applies, the
others wait and then find nothing to do), creates the bookkeeping tables if needed, checks that
every recorded version still has the same checksum, refuses a database that has versions this
package does not know (`SchemaTooNew`), and applies what is missing, version by version.

File syntax
-----------
Directive lines split a file into sections: ``-- asynqpg: concurrently`` starts a section of
statements that cannot run inside a transaction block, ``-- asynqpg: transaction`` a
transactional one again; the text before the first directive is transactional.  A
**transaction section** runs as one multi-statement query in one transaction (as a file without
directives always has): all of it or nothing.  Each statement of a **concurrently section** ends
with a ``;`` at the end of a line (a statement may span lines, two may not share one, a ``;``
inside one is refused); they run one at a time in autocommit, with no ``lock_timeout`` of ours.
Comment lines are ignored.  A version adding a column (a constant default rewrites nothing) and
an index on it, then validating a check added ``NOT VALID`` (a scan under a lock that lets
writes through)::

    ALTER TABLE asynqpg_tasks ADD COLUMN rank smallint NOT NULL DEFAULT 0;
    ALTER TABLE asynqpg_tasks ADD CONSTRAINT rank_check CHECK (rank >= 0) NOT VALID;

    -- asynqpg: concurrently
    CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_rank_idx
        ON asynqpg_tasks (rank) WHERE status = 'pending';
    ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT rank_check;

Every ``CREATE INDEX CONCURRENTLY`` must say ``IF NOT EXISTS`` and give a plain (unquoted,
optionally schema-qualified) index name, or the file is refused at import.  Any statement of a
concurrently section must be safe to run twice (``IF [NOT] EXISTS``): a crash between its
success and the recording of that success runs it again.

Steps, progress and repair
--------------------------
A version is a list of *steps*: each transaction section, and each statement of a concurrently
section.  A step that is not the last records ``steps_done`` for its version in
``asynqpg_migration_progress`` (in the step's own transaction, or just after a statement run
outside one); the last step records the version in ``asynqpg_migrations`` and deletes the
progress row, in one transaction.  So a version is recorded only when all its steps succeeded,
and a rerun after a failure or a crash resumes at the first step not done: a transaction
section is never applied twice.  A rerun refuses to resume from progress recorded for a
different text of the file (`SchemaError`).

A ``CREATE INDEX CONCURRENTLY`` that fails or is interrupted (a duplicate for a unique index, a
cancelled query, a lost connection) leaves an INVALID index, which ``IF NOT EXISTS`` would then
accept as done.  Before each such statement the runner checks ``pg_index.indisvalid``; an
invalid index is dropped with ``DROP INDEX CONCURRENTLY IF EXISTS`` and built again.  No other
migrator can be building it at that moment: it would hold the lock (a backend whose client died
keeps holding it until its statement ends, and the rerun waits for it).

Locks
-----
The migration lock is session-level because a concurrently section spans several transactions.
It is taken with ``pg_try_advisory_lock``, polled, never waited for in the server: a session
blocked in ``pg_advisory_lock`` holds a snapshot, which the lock holder's ``CREATE INDEX
CONCURRENTLY`` would wait for, a deadlock.  `migrate` runs on a connection of its own, closed at
the end, so the lock never outlives the run in a pooled connection.

Each transaction section runs with ``lock_timeout`` set (locally to its transaction): DDL that
needs a table lock (``ALTER TABLE`` takes ACCESS EXCLUSIVE) waits at most that long instead of
queueing behind a long transaction while every query on the table queues behind it.  On
``lock_not_available`` the step is rolled back and retried after a pause (``lock_timeout``,
doubling, at most `_MAX_PAUSE`); after ``attempts`` tries `migrate` raises `MigrationBlocked`.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
from psycopg import sql

from .._core._errors import (
    ConfigurationError,
    MigrationBlocked,
    SchemaError,
    SchemaMissing,
    SchemaTooNew,
)
from ._conn import CANCEL_GRACE
from ._migration_files import LATEST_VERSION, MIGRATIONS, Migration
from ._pool import Pool, owned_pool
from ._sql import SCHEMA

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from ._conn import Connection
    from ._migration_files import Step

__all__ = [
    "LATEST_VERSION",
    "LOCK_ATTEMPTS",
    "LOCK_TIMEOUT",
    "MIGRATIONS",
    "Migration",
    "check_schema",
    "migrate",
    "migrate_conn",
    "schema_required",
]

logger = logging.getLogger("asynqpg_trio.migrate")

# An arbitrary constant: the key of the advisory lock that serialises migrations.
_LOCK_KEY = 0x61_73_79_6E_71_70_67  # "asynqpg"
#: Seconds a transaction section waits for a table lock before its attempt fails.
LOCK_TIMEOUT = 2.0
#: Attempts at a transaction section that cannot get its locks, before `MigrationBlocked`.
LOCK_ATTEMPTS = 5
#: The longest pause, in seconds, between two attempts at a step.
_MAX_PAUSE = 10.0
#: First and longest interval, in seconds, between two tries at the migration lock.
_POLL_FIRST, _POLL_MAX = 0.05, 1.0


async def migrate_conn(
    conn: Connection[Any],
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    lock_timeout: float = LOCK_TIMEOUT,
    attempts: int = LOCK_ATTEMPTS,
) -> list[int]:
    """Apply the missing ``migrations`` on ``conn``; return the versions applied.

    ``conn`` must be in autocommit mode; the migration lock is released on return.  The
    ``migrations`` default to the package's own; tests give their own list.

    Raises:
        MigrationBlocked: a transaction section could not get its table locks.
        SchemaTooNew: the database has versions past the last of ``migrations``.
        SchemaError: an applied version's text differs, or progress was recorded for another.
        ConfigurationError: ``lock_timeout`` is not positive or ``attempts`` is below 1.

    Cancellation: a checkpoint; if cancelled, the step under way is rolled back (or, for a
    ``CREATE INDEX CONCURRENTLY``, cancelled on the server, leaving an invalid index that the
    next run rebuilds); the steps done before stay recorded.
    """
    if not conn.autocommit:
        raise ConfigurationError("migrate_conn needs a connection in autocommit mode")
    if not lock_timeout > 0 or attempts < 1:
        raise ConfigurationError(
            f"lock_timeout must be > 0 and attempts >= 1, not {lock_timeout!r} and {attempts!r}"
        )
    applied: list[int] = []
    async with _migration_lock(conn):
        await conn.execute(SCHEMA.create_bookkeeping)
        await conn.execute(SCHEMA.create_progress)
        cur = await conn.execute(SCHEMA.recorded_versions)
        recorded = {int(v): str(c) for v, c in await cur.fetchall()}
        _check_recorded(recorded, migrations)
        cur = await conn.execute(SCHEMA.progress)
        progress = {int(v): (str(c), int(n)) for v, c, n in await cur.fetchall()}
        for migration in migrations:
            if migration.version in recorded:
                continue
            await _apply(conn, migration, progress.get(migration.version), lock_timeout, attempts)
            applied.append(migration.version)
    return applied


@asynccontextmanager
async def _migration_lock(conn: Connection[Any]) -> AsyncIterator[None]:
    """Hold the session-level migration lock for the block (polled for: see the module doc)."""
    poll = _POLL_FIRST
    while not await _try_lock(conn):
        await anyio.sleep(poll)
        poll = min(poll * 2, _POLL_MAX)
    try:
        yield
    finally:
        await _unlock(conn)


async def _try_lock(conn: Connection[Any]) -> bool:
    cur = await conn.execute(SCHEMA.migration_try_lock, {"key": _LOCK_KEY})
    row = await cur.fetchone()
    return bool(row and row[0])


async def _unlock(conn: Connection[Any]) -> None:
    """Release the migration lock, shielded and bounded; close ``conn`` if that fails (closing
    the session releases the lock too)."""
    if conn.closed:
        return
    with anyio.move_on_after(CANCEL_GRACE, shield=True):
        try:
            await conn.execute(SCHEMA.migration_unlock, {"key": _LOCK_KEY})
        except psycopg.Error as ex:
            logger.warning("could not release the migration lock (%s): closing", ex)
        else:
            return
    await conn.close()


async def _apply(
    conn: Connection[Any],
    migration: Migration,
    progress: tuple[str, int] | None,
    lock_timeout: float,
    attempts: int,
) -> None:
    """Apply the steps of ``migration`` not done yet, recording each."""
    steps = migration.steps
    done = 0
    if progress is not None:
        checksum, done = progress
        if checksum != migration.checksum or done >= len(steps):
            raise SchemaError(
                f"migration {migration.version} ({migration.name}) was partly applied from a "
                "different text than this package ships: finish it with the package that "
                "started it, or check the schema by hand and delete its row from "
                "asynqpg_migration_progress"
            )
    for number in range(done + 1, len(steps) + 1):
        step = steps[number - 1]
        if step.in_transaction:
            await _transaction_step(conn, migration, step, number, lock_timeout, attempts)
            continue
        if step.index is not None:
            await _drop_if_invalid(conn, step.index)
        await conn.execute(sql.SQL(step.sql))  # type: ignore[arg-type,unused-ignore]
        async with conn.transaction():
            await _record(conn, migration, number)


async def _transaction_step(
    conn: Connection[Any],
    migration: Migration,
    step: Step,
    number: int,
    lock_timeout: float,
    attempts: int,
) -> None:
    """Run a transaction section and record it, under ``lock_timeout``, retrying on
    ``lock_not_available`` up to ``attempts`` times."""
    timeout = f"{max(1, round(lock_timeout * 1000))}ms"
    for attempt in range(1, attempts + 1):
        try:
            async with conn.transaction():
                await conn.execute(SCHEMA.set_lock_timeout, {"timeout": timeout})
                await conn.execute(sql.SQL(step.sql))  # type: ignore[arg-type,unused-ignore]
                await _record(conn, migration, number)
        except psycopg.errors.LockNotAvailable as ex:
            if attempt == attempts:
                raise MigrationBlocked(
                    f"migration {migration.version} ({migration.name}) could not lock the "
                    f"tables it changes: {attempts} attempts each waited lock_timeout="
                    f"{lock_timeout:g} s.  Another session holds a conflicting lock, often a "
                    "long-running or idle-in-transaction one (see pg_stat_activity and "
                    "pg_locks): let it finish or end it, then run `asynqpg-trio migrate` "
                    "again, which resumes at this step"
                ) from ex
            logger.warning(
                "migration %d: lock_timeout after %g s (attempt %d of %d); retrying",
                migration.version,
                lock_timeout,
                attempt,
                attempts,
            )
            await anyio.sleep(min(lock_timeout * 2 ** (attempt - 1), _MAX_PAUSE))
        else:
            return


async def _drop_if_invalid(conn: Connection[Any], index: str) -> None:
    """Drop ``index`` if a failed or interrupted build left it invalid."""
    cur = await conn.execute(SCHEMA.index_is_invalid, {"name": index})
    row = await cur.fetchone()
    if row and row[0]:
        logger.warning("index %s is invalid (an earlier build failed): building it again", index)
        name = sql.Identifier(*index.split("."))
        await conn.execute(sql.SQL(SCHEMA.drop_index).format(index=name))  # type: ignore[arg-type,unused-ignore]


async def _record(conn: Connection[Any], migration: Migration, steps_done: int) -> None:
    """Inside a transaction: record ``steps_done`` steps of ``migration`` as done; all of
    them records the version itself and forgets its progress."""
    if steps_done < len(migration.steps):
        await conn.execute(
            SCHEMA.record_progress,
            {
                "version": migration.version,
                "checksum": migration.checksum,
                "steps_done": steps_done,
            },
        )
        return
    await conn.execute(
        SCHEMA.record_version,
        {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
    )
    await conn.execute(SCHEMA.clear_progress, {"version": migration.version})


def _check_recorded(recorded: dict[int, str], migrations: Sequence[Migration]) -> None:
    latest = migrations[-1].version if migrations else 0
    newer = sorted(v for v in recorded if v > latest)
    if newer:
        raise SchemaTooNew(
            f"the database has schema version {max(newer)}, but this asynqpg-trio knows only "
            f"up to {latest}: upgrade the asynqpg-trio package"
        )
    for migration in migrations:
        checksum = recorded.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise SchemaError(
                f"migration {migration.version} ({migration.name}) was applied with a different "
                "text than this package ships; the schema was changed by hand or by a "
                "modified package"
            )


_MISSING = (
    "the asynqpg tables are missing from this database: run "
    "`asynqpg-trio migrate --dsn ...` or `await asynqpg_trio.migrate(dsn)` first"
)
_OLD = "the database's asynqpg schema is older than this package: run `asynqpg-trio migrate`"


@contextlib.contextmanager
def schema_required() -> Iterator[None]:
    """Around the queue's statements: a missing table or function means a database without
    the schema, a missing column or unique index one migrated by an older version, reported
    as `SchemaMissing` (from psycopg's error) rather than as SQL."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as ex:
        # A function of a later version (unique tasks: 0004) means an older schema.
        newer = "asynqpg_unique" in (ex.diag.message_primary or "")
        raise SchemaMissing(_OLD if newer else _MISSING) from ex
    except psycopg.errors.UndefinedColumn as ex:
        raise SchemaMissing(_OLD) from ex
    except psycopg.errors.ObjectNotInPrerequisiteState as ex:
        # asynqpg_unique_ready(): a migration has yet to build the unique index.
        if not (ex.diag.message_primary or "").startswith("asynqpg:"):
            raise
        raise SchemaMissing(f"{ex.diag.message_primary}; {_OLD}") from ex


async def check_schema(conn: Connection[Any]) -> None:
    """Raise unless the database has exactly the schema this package needs.

    Raises:
        SchemaMissing: no asynqpg tables, or migrations missing (run ``asynqpg-trio migrate``).
        SchemaTooNew: the database was migrated by a newer asynqpg-trio.

    Cancellation: a checkpoint; reads only.
    """
    cur = await conn.execute(SCHEMA.has_bookkeeping)
    row = await cur.fetchone()
    if not row or not row[0]:
        raise SchemaMissing(_MISSING)
    cur = await conn.execute(SCHEMA.recorded_versions)
    recorded = {int(v): str(c) for v, c in await cur.fetchall()}
    _check_recorded(recorded, MIGRATIONS)
    missing = [m.version for m in MIGRATIONS if m.version not in recorded]
    if missing:
        raise SchemaMissing(
            f"the database lacks schema versions {missing}: run `asynqpg-trio migrate` to "
            "upgrade it"
        )


async def migrate(
    pool_or_dsn: Pool | str,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    attempts: int = LOCK_ATTEMPTS,
) -> list[int]:
    """Bring the database's asynqpg schema up to date; return the versions applied.

    Safe to run from many processes at once: they serialise on an advisory lock, and all but
    the first find nothing to do.  Safe to run again after a run that failed or died half-way:
    it resumes where that one stopped, and rebuilds an index whose concurrent build it left
    invalid.  Runs on a connection of its own (opened with the pool's settings, closed at the
    end), never on one of the pool's.

    Args:
        pool_or_dsn: a pool, or a DSN.
        lock_timeout: seconds a step that alters a table waits for its lock before the
            attempt fails, so that it never queues for long behind a long transaction while
            the table's readers and writers queue behind it.
        attempts: tries at such a step before giving up with `MigrationBlocked`.

    Raises:
        MigrationBlocked: a step could not get its table locks in ``attempts`` tries.
        SchemaTooNew: the database was migrated by a newer asynqpg-trio.
        SchemaError: an applied migration's text differs from this package's.

    Cancellation: a checkpoint; if cancelled, the step under way is rolled back (an index
    being built concurrently is left invalid, and rebuilt by the next run); the versions and
    steps done before stay applied and recorded.
    """
    async with owned_pool(pool_or_dsn, max_size=1) as pool:
        if not pool.has_session:
            raise ConfigurationError(
                "migrate needs a session of its own (it holds an advisory lock), which a "
                "transaction pooler cannot give: open the pool with direct_dsn= (a DSN "
                "straight to PostgreSQL), or run `asynqpg-trio migrate --dsn <direct DSN>`"
            )
        conn = await pool.connect()
        try:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            return await migrate_conn(conn, lock_timeout=lock_timeout, attempts=attempts)
        finally:
            await conn.close()
