"""Schema migrations: numbered ``.sql`` files applied in order under an advisory lock.

Theory of operation
-------------------
Each file ``migrations/NNNN_name.sql`` is one version.  `migrate` takes a transaction-scoped
advisory lock (so any number of processes may run it at once: the first applies, the others
wait and then find nothing to do), creates the bookkeeping table ``asynqpg_migrations`` if
needed, checks that every recorded version still has the same checksum, refuses a database
that has versions this package does not know (`SchemaTooNew`), and applies what is missing,
all in one transaction: a failure leaves the schema as it was.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from .._core._errors import SchemaError, SchemaMissing, SchemaTooNew
from ._migration_files import LATEST_VERSION, MIGRATIONS, Migration
from ._pool import Pool, owned_pool
from ._sql import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._conn import Connection

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "check_schema",
    "migrate",
    "migrate_conn",
    "schema_required",
]

# An arbitrary constant: the key of the advisory lock that serialises migrations.
_LOCK_KEY = 0x61_73_79_6E_71_70_67  # "asynqpg"


async def migrate_conn(conn: Connection[Any]) -> list[int]:
    """Apply the missing migrations on ``conn``; return the versions applied.

    Cancellation: a checkpoint; if cancelled, the transaction rolls back and the schema is as
    it was.
    """
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(SCHEMA.migration_lock, {"key": _LOCK_KEY})
        await conn.execute(SCHEMA.create_bookkeeping)
        cur = await conn.execute(SCHEMA.recorded_versions)
        recorded = {int(v): str(c) for v, c in await cur.fetchall()}
        _check_recorded(recorded)
        for migration in MIGRATIONS:
            if migration.version in recorded:
                continue
            await conn.execute(sql.SQL(migration.sql))  # type: ignore[arg-type,unused-ignore]
            await conn.execute(
                SCHEMA.record_version,
                {
                    "version": migration.version,
                    "name": migration.name,
                    "checksum": migration.checksum,
                },
            )
            applied.append(migration.version)
    return applied


def _check_recorded(recorded: dict[int, str]) -> None:
    newer = sorted(v for v in recorded if v > LATEST_VERSION)
    if newer:
        raise SchemaTooNew(
            f"the database has schema version {max(newer)}, but this asynqpg-trio knows only "
            f"up to {LATEST_VERSION}: upgrade the asynqpg-trio package"
        )
    for migration in MIGRATIONS:
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


@contextlib.contextmanager
def schema_required() -> Iterator[None]:
    """Around the queue's statements: a missing table or function means a database without
    the schema, reported as `SchemaMissing` (from psycopg's error) rather than as SQL."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as ex:
        raise SchemaMissing(_MISSING) from ex


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
    _check_recorded(recorded)
    missing = [m.version for m in MIGRATIONS if m.version not in recorded]
    if missing:
        raise SchemaMissing(
            f"the database lacks schema versions {missing}: run `asynqpg-trio migrate` to "
            "upgrade it"
        )


async def migrate(pool_or_dsn: Pool | str) -> list[int]:
    """Bring the database's asynqpg schema up to date; return the versions applied.

    Safe to run from many processes at once: they serialise on an advisory lock, and all but
    the first find nothing to do.

    Raises:
        SchemaTooNew: the database was migrated by a newer asynqpg-trio.
        SchemaError: an applied migration's text differs from this package's.

    Cancellation: a checkpoint; if cancelled, nothing is applied.
    """
    async with owned_pool(pool_or_dsn, max_size=1) as pool, pool.connection() as conn:
        return await migrate_conn(conn)
