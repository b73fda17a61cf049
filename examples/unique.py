"""Unique tasks: one task per key while it is waiting or running, or one per period.

Run: python examples/unique.py DSN   (or set ASYNQPG_DSN)
"""

from __future__ import annotations

import os
import sys

import trio

import asynqpg_trio
from asynqpg_trio import (
    DuplicateTask,
    Handler,
    Producer,
    Task,
    TaskInfo,
    Unique,
    open_consumer,
    open_pool,
)


async def refresh(task: TaskInfo) -> None:
    print(f"refreshed the cache for {task.payload.decode()} (task {task.id})")


async def send_digest(task: TaskInfo) -> None:
    print(f"sent the hourly digest (task {task.id})")


def refresh_task(user: str) -> Task:
    # No key given: the key is the payload's hash, so equal payloads are duplicates while one
    # of them is pending or running (the default states).
    return Task("cache.refresh", user.encode(), unique=Unique())


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with open_pool(dsn, max_size=4) as pool:
        producer = Producer(pool)
        enqueued = 0
        first = await producer.enqueue(refresh_task("user:42"))
        enqueued += 1
        print(f"enqueued task {first}")
        try:
            await producer.enqueue(refresh_task("user:42"))
        except DuplicateTask as duplicate:
            print(f"a duplicate of task {duplicate.existing_id}: not enqueued")
        # In a batch, a duplicate's place holds None (a held key, or an earlier task's).
        batch = [refresh_task("user:42"), refresh_task("user:7"), refresh_task("user:7")]
        ids = await producer.enqueue_many(batch)
        enqueued += sum(i is not None for i in ids)
        print(f"batch: {['duplicate' if i is None else i for i in ids]}")

        # An explicit key and a period: one digest per clock hour (UTC), even once completed.
        hourly = Unique("digest", period=3600, states=("pending", "running", "completed"))
        for payload in (b"first try", b"second try"):
            try:
                await producer.enqueue(Task("digest.send", payload, unique=hourly))
                enqueued += 1
            except DuplicateTask as duplicate:
                print(f"this hour's digest is task {duplicate.existing_id} already")

        handlers = {"cache.refresh": Handler(refresh), "digest.send": Handler(send_digest)}
        async with open_consumer(pool, handlers=handlers) as consumer:
            while consumer.statistics().completed < enqueued:
                await trio.sleep(0.05)
            # Completed: the refresh's key is free again.
            again = await producer.enqueue(refresh_task("user:42"))
            print(f"enqueued task {again} again, the first one being done")
            while consumer.statistics().completed < enqueued + 1:
                await trio.sleep(0.05)
    print("done")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
