"""Failover: a streaming standby is promoted while consumers and a producer run, and the old
primary is stopped; they find the new primary by themselves and the books balance.

The fixture makes two real PostgreSQL clusters on this machine (``initdb``, then
``pg_basebackup -R`` for the standby: ``tests/helpers/servers.py``), with synchronous
replication, so a commit is acknowledged only once the standby has it.  Everyone connects with
one multi-host DSN, ``host=a,b port=p,q target_session_attrs=read-write``: libpq tries each
host and keeps the one that accepts writes, so after the switch every new connection lands on
the promoted standby.  Nothing in the library knows about the failover: the pool discards the
connections that died with the old primary, the actors' supervisors retry, the producer's
caller retries what failed (with the same idempotency token, so a retry of an enqueue that did
commit is refused as a duplicate naming the task).

Books: every enqueue that was acknowledged (returned an id, or was refused as a duplicate of
one) is a task on the new primary and ends completed; none is lost.  Handlers may run a task
twice only when its outcome was written to the old primary after the switch (never
acknowledged, so lost with it) or its lease expired during the outage: such duplicates are
counted and bounded by what can be in flight.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from asynqpg_trio import (
    ConstantRetryPolicy,
    DuplicateTask,
    Handler,
    MaintenanceConfig,
    Producer,
    Task,
    TaskInfo,
    migrate,
    open_consumer,
    open_pool,
)

from .helpers.servers import Replicated, replicated_pair

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

TASKS = 600
CONSUMERS = 2
WORKERS = 8


@pytest.fixture(scope="module")
def pair() -> Iterator[Replicated]:
    """A primary and a synchronous streaming standby, with a migrated ``queue`` database."""
    with replicated_pair(synchronous=True) as made:
        with psycopg.connect(made.primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE queue")
        trio.run(migrate, made.dsn_for("queue"))
        yield made


async def _enqueue_until_acknowledged(
    producer: Producer, index: int, failures: Counter[str]
) -> int:
    """Enqueue task ``index`` (idempotency token ``t-index``), retrying through the outage
    until it is acknowledged; its id."""
    task = Task("t", str(index).encode(), idempotency_token=f"t-{index}")
    while True:
        try:
            return await producer.enqueue(task)
        except DuplicateTask as duplicate:  # an earlier try did commit
            failures["duplicate"] += 1
            return duplicate.existing_id
        except psycopg.OperationalError:  # the primary went away (ConnectionFailed is one)
            failures["retried"] += 1
            await trio.sleep(0.1)


def _finished(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM asynqpg_tasks"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_promote_the_standby_and_stop_the_primary_while_consumers_run(
    pair: Replicated,
) -> None:
    dsn = pair.dsn_for("queue")
    runs: Counter[int] = Counter()
    acknowledged: dict[int, int] = {}
    failures: Counter[str] = Counter()
    at_switch: list[int] = []
    quarter = trio.Event()

    async def handle(task: TaskInfo) -> None:
        runs[task.id] += 1
        await trio.sleep(0.005)

    async def consumer(index: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with (
            open_pool(dsn, max_size=6, reconnect_timeout=30.0) as pool,
            open_consumer(
                pool,
                handlers={"t": Handler(handle, workers=WORKERS)},
                consumer_id=f"c{index}",
                lease_duration=4.0,
                poll_interval=0.2,
                retry_policy=ConstantRetryPolicy(0.1),
                maintenance=MaintenanceConfig(ttl=3.0, renew_interval=1.0, janitor_interval=0.5),
            ),
        ):
            task_status.started()
            await trio.sleep_forever()

    async def produce(first: int, last: int) -> None:
        async with open_pool(dsn, max_size=2, reconnect_timeout=30.0) as pool:
            producer = Producer(pool)
            for index in range(first, last):
                acknowledged[index] = await _enqueue_until_acknowledged(producer, index, failures)
                if len(acknowledged) >= TASKS // 4:
                    quarter.set()
                await trio.sleep(0.002)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(CONSUMERS):
                await nursery.start(consumer, index)
            async with trio.open_nursery() as producers:
                producers.start_soon(produce, 0, TASKS // 2)
                producers.start_soon(produce, TASKS // 2, TASKS)
                await quarter.wait()  # the switch comes mid-stream

                def switch() -> None:
                    pair.standby.promote()
                    pair.primary.stop("fast")

                at_switch.append(len(acknowledged))
                await trio.to_thread.run_sync(switch)
            with trio.fail_after(120):
                target = len(set(acknowledged.values()))
                # Polling the new primary: nothing in this process can say when it is done.
                while _finished(pair.standby.dsn_for("queue"))[0] < target:  # noqa: ASYNC110
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()

    trio.run(main)

    ids = set(acknowledged.values())
    assert len(acknowledged) == TASKS
    assert at_switch[0] < TASKS  # enqueues were acknowledged by both primaries
    assert failures["retried"] >= 1  # the producer did see the primary go
    assert len(ids) == TASKS  # one task per token
    with psycopg.connect(pair.standby.dsn_for("queue"), autocommit=True) as conn:
        rows = conn.execute("SELECT id, status FROM asynqpg_tasks").fetchall()
    status: dict[int, str] = {int(i): str(s) for i, s in rows}
    assert {i: status.get(i) for i in ids} == dict.fromkeys(ids, "completed")  # none lost
    assert set(runs) >= ids  # every task was handled
    doubled = sum(1 for n in runs.values() if n > 1)
    # Duplicates only among what was in flight at the switch: each consumer holds at most its
    # workers plus as many prefetched.
    assert doubled <= CONSUMERS * WORKERS * 2, runs.most_common(5)
    print(f"failover: {TASKS} tasks, {doubled} run twice, producer retries {dict(failures)}")
