"""Unique tasks under concurrent producers, and the holder that leaves between two statements.

* Eight OS processes (four on the async producer, four on ``asynqpg_trio.sync``, each on a
  connection of its own) are released at once and each enqueue the same unique task 1,000
  times: exactly one row results, and every one of the 8,000 calls learns its id.
* A duplicate's holder that leaves its unique states after the insert skipped the task but
  before the lookup of its id: the producer inserts again, so the call still ends with an id
  (the race is made to happen every time by completing the holder inside the lookup).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from asynqpg_trio import Producer, Task, Unique
from asynqpg_trio import sync as sync_producer
from asynqpg_trio._core._inserted import Holder
from asynqpg_trio._pg import _sync_repo, _tasks_repo

if TYPE_CHECKING:
    from asynqpg_trio import Pool

ROOT = Path(__file__).resolve().parent.parent
PROCESSES, CALLS = 8, 1000


def test_eight_producers_enqueue_one_unique_task_8000_times(dsn: str) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.unique_producer",
                dsn,
                str(CALLS),
                "async" if i % 2 else "sync",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for p in procs:  # every process connected and waiting
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n", p.stderr.read() if p.stderr else ""
        for p in procs:  # go
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        learned: dict[int, int] = {}
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            for task_id, n in json.loads(out).items():
                learned[int(task_id)] = learned.get(int(task_id), 0) + n
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, status FROM asynqpg_tasks").fetchall()
    assert len(rows) == 1
    ((the_id, status),) = rows
    assert status == "pending"
    assert learned == {the_id: PROCESSES * CALLS}


def _complete(dsn: str, task_id: int) -> None:
    """Move a task out of its unique states as a consumer would leave it: completed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE asynqpg_tasks SET status = 'completed', finalized_at = now() WHERE id = %s",
            (task_id,),
        )


async def test_holder_leaving_before_the_lookup_means_insert_again(
    dsn: str, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = Producer(pool)
    task = Task("race", b"", unique=Unique("k"))
    holder_id = await producer.enqueue(task)
    real = _tasks_repo.find_holder
    lookups: list[Holder] = []

    async def leaving(conn: psycopg.AsyncConnection[Any], holder: Holder) -> int | None:
        lookups.append(holder)
        _complete(dsn, holder_id)  # between the skipped insert and the lookup
        return await real(conn, holder)

    monkeypatch.setattr(_tasks_repo, "find_holder", leaving)
    new_id = await producer.enqueue(task)
    assert new_id > holder_id
    assert [(h.task_type, h.unique_key, h.window) for h in lookups] == [("race", "k", None)]


def test_holder_leaving_before_the_lookup_sync(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task("race", b"", unique=Unique("k", period=3600))
    with psycopg.connect(dsn, autocommit=True) as conn:
        holder_id = sync_producer.enqueue(conn, task)
        real = _sync_repo.find_holder

        def leaving(c: psycopg.Connection[Any], holder: Holder) -> int | None:
            assert holder.window is not None  # the window the skipped insert computed
            _complete(dsn, holder_id)
            return real(c, holder)

        monkeypatch.setattr(sync_producer, "find_holder", leaving)
        assert sync_producer.enqueue(conn, task) > holder_id
