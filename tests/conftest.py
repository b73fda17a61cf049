"""Test fixtures: a real PostgreSQL server, a migrated template database, and a fresh database
cloned from it for every test (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.

The server is ``$ASYNQPG_TEST_DSN`` when set, else an embedded PostgreSQL started for the run.
Tests never touch a database they did not create.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import conninfo, sql

from asynqpg_trio._pg._server import embedded_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from asynqpg_trio import Pool


def _with_db(dsn: str, dbname: str) -> str:
    return conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN to a maintenance database on the test server (never used for test data)."""
    dsn = os.environ.get("ASYNQPG_TEST_DSN")
    if dsn:
        yield dsn
        return
    with embedded_server() as embedded:
        yield embedded


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """Name of a database with the schema applied, used as the template for every test.

    The schema is applied by `migrate` itself, on a loop of its own: the same code path as in
    production, so a migration with a ``concurrently`` section (which cannot run in the one
    multi-statement query that used to apply each file here) is applied as users get it.
    """
    import trio

    from asynqpg_trio import migrate

    name = f"asynqpg_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        trio.run(migrate, _with_db(server_dsn, name))
        yield name
    finally:
        _drop(server_dsn, name)


def _drop(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A DSN to a brand-new empty database (no schema), dropped after the test."""
    name = f"asynqpg_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(server_dsn, name)
    finally:
        _drop(server_dsn, name)


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A DSN to a fresh database with the schema applied, dropped after the test."""
    name = f"asynqpg_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield _with_db(server_dsn, name)
    finally:
        _drop(server_dsn, name)


@pytest.fixture
def sync_conn(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain sync psycopg connection to the test database, for setup and inspection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[Pool]:
    """An open pool on the test database."""
    from asynqpg_trio import open_pool

    async with open_pool(dsn, min_size=1, max_size=8) as p:
        yield p
