"""A producer of one unique task, run in a separate OS process by tests/test_unique_race.py.

Usage: python -m tests.helpers.unique_producer DSN CALLS API

Connects (API ``async``: the async `Producer` on a Trio connection; ``sync``:
``asynqpg_trio.sync`` on a psycopg connection), prints ``ready``, waits for a line on stdin so
that every process starts at once, then enqueues the same unique task CALLS times, one call
after another, and prints one JSON object: for each id a call learned (inserted, or named by
`DuplicateTask`), how many calls learned it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import psycopg
import trio

from asynqpg_trio import DuplicateTask, Producer, Task, Unique, connect
from asynqpg_trio import sync as sync_producer

TASK = Task("race", b"same", unique=Unique("the-one"))


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


async def _run_async(dsn: str, calls: int) -> Counter[int]:
    learned: Counter[int] = Counter()
    conn = await connect(dsn)
    producer = Producer("host=unused")  # every call passes conn=
    try:
        await trio.to_thread.run_sync(_ready)
        for _ in range(calls):
            try:
                learned[await producer.enqueue(TASK, conn=conn)] += 1
            except DuplicateTask as ex:
                learned[ex.existing_id] += 1
    finally:
        await producer.aclose()
        await conn.close()
    return learned


def _run_sync(dsn: str, calls: int) -> Counter[int]:
    learned: Counter[int] = Counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ready()
        for _ in range(calls):
            try:
                learned[sync_producer.enqueue(conn, TASK)] += 1
            except DuplicateTask as ex:
                learned[ex.existing_id] += 1
    return learned


def main() -> None:
    dsn, calls, api = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    learned = trio.run(_run_async, dsn, calls) if api == "async" else _run_sync(dsn, calls)
    print(json.dumps({str(k): v for k, v in learned.items()}), flush=True)


if __name__ == "__main__":
    main()
