"""Helpers for the tests of a migration applied to a database in use."""

from __future__ import annotations

from typing import Any

import psycopg

from asynqpg_trio import connect
from asynqpg_trio._pg._migrate import MIGRATIONS, migrate_conn

__all__ = ["migrate_to", "relfilenode"]


async def migrate_to(dsn: str, version: int) -> list[int]:
    """Apply the migrations up to ``version`` only; return the versions applied."""
    conn = await connect(dsn)
    try:
        return await migrate_conn(conn, migrations=[m for m in MIGRATIONS if m.version <= version])
    finally:
        await conn.close()


def relfilenode(conn: psycopg.Connection[Any]) -> int:
    """asynqpg_tasks's file node: it changes when the table is rewritten."""
    row = conn.execute("SELECT pg_relation_filenode('asynqpg_tasks')").fetchone()
    assert row is not None
    return int(row[0])
