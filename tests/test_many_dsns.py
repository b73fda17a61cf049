"""Several databases in one process: a consumer per DSN, side by side in one nursery.

Queues split across PostgreSQL clusters (see docs/how-to/deployment.md) are served this way:
each consumer owns its pool, its LISTEN connection and its leader election, so two of them in
one process share nothing but the event loop.  Here the two databases are on one server; the
library cannot tell the difference.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
import trio
from psycopg import conninfo, sql

from asynqpg_trio import Handler, Producer, Task, TaskInfo, serve_consumer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def second_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A second fresh migrated database."""
    name = f"asynqpg_t2_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield conninfo.make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def test_two_consumers_on_two_dsns_in_one_nursery(dsn: str, second_dsn: str) -> None:
    handled: dict[str, list[bytes]] = {dsn: [], second_dsn: []}
    each = 20
    all_done = trio.Event()

    def recorder(where: str) -> Handler:
        async def record(task: TaskInfo) -> None:
            handled[where].append(task.payload)
            if all(len(done) >= each for done in handled.values()):
                all_done.set()

        return Handler(record, workers=4)

    # --8<-- [start:nursery]
    async with trio.open_nursery() as nursery:
        for where in (dsn, second_dsn):
            await nursery.start(
                lambda task_status, where=where: serve_consumer(
                    where,
                    handlers={"t": recorder(where)},
                    poll_interval=0.1,
                    task_status=task_status,
                )
            )
        for where in (dsn, second_dsn):
            async with Producer(where) as producer:
                await producer.enqueue_many(
                    [Task("t", f"{where[-10:]}-{i}".encode()) for i in range(each)]
                )
        with trio.fail_after(30):
            await all_done.wait()
        nursery.cancel_scope.cancel()
    # --8<-- [end:nursery]

    # Each consumer ran its own database's tasks, and only those.
    for where, payloads in handled.items():
        assert sorted(payloads) == sorted(f"{where[-10:]}-{i}".encode() for i in range(each))
