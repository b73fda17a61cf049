"""Results, waiting and progress: request/response over the queue.

A handler's return value is stored with its completed task; `Producer.enqueue_and_wait`
enqueues a task and waits (woken by a NOTIFY, never polling) for its result.  The handler
reports its progress, which `Client.get_task` shows while it runs.

Run: python examples/results.py DSN   (or set ASYNQPG_DSN)
"""

from __future__ import annotations

import json
import os
import sys

import trio

import asynqpg_trio
from asynqpg_trio import (
    Client,
    Producer,
    Task,
    TaskFailed,
    TaskInfo,
    open_consumer,
    open_pool,
    report_progress,
)


async def resize(task: TaskInfo) -> dict[str, object]:
    request = json.loads(task.payload)
    sizes = request["sizes"]
    for done, size in enumerate(sizes, start=1):
        await trio.sleep(0.05)  # the work
        report_progress(done / len(sizes), f"resized to {size}px")
    return {"image": request["image"], "thumbnails": [f"{request['image']}@{s}" for s in sizes]}


async def check(task: TaskInfo) -> bytes:
    if task.payload == b"":
        raise asynqpg_trio.SkipRetry("nothing to check")
    return task.payload[::-1]  # bytes are stored as they are


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with open_pool(dsn, max_size=4) as pool:
        producer, client = Producer(pool), Client(pool)
        handlers = {"image.resize": resize, "check": check}
        async with open_consumer(pool, handlers=handlers):
            payload = json.dumps({"image": "cat.png", "sizes": [64, 128, 256]}).encode()
            with trio.fail_after(30):  # no timeout= argument: bound the wait from outside
                result = await producer.enqueue_and_wait(Task("image.resize", payload))
            print(f"thumbnails: {result['thumbnails']}")

            task_id = await producer.enqueue(Task("check", b"olleh"))
            print(f"check returned {await client.wait(task_id)!r}")
            print(f"stored result: {await client.get_result(task_id)!r}")
            record = await client.get_task(task_id)
            print(f"task {task_id} is {record.status}, result {record.result_size} bytes")

            task_id = await producer.enqueue(Task("image.resize", payload))
            with trio.fail_after(30):
                await client.wait(task_id)
            record = await client.get_task(task_id)
            print(f"progress {record.progress:.0%}: {record.progress_note}")

            try:
                await producer.enqueue_and_wait(Task("check", b""))
            except TaskFailed as failed:
                print(f"failed: task {failed.task_id}")
    print("done")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
