"""The same consumer under anyio on asyncio: asynqpg-trio runs on either backend.

Run: python examples/anyio_consumer.py DSN   (or set ASYNQPG_DSN)
"""

from __future__ import annotations

import os
import sys

import anyio

import asynqpg_trio
from asynqpg_trio import Producer, Task, TaskInfo, TaskSnooze, open_consumer

seen: set[int] = set()


async def resize_image(task: TaskInfo) -> None:
    if task.id not in seen:  # the first time round the image is not uploaded yet
        seen.add(task.id)
        raise TaskSnooze(0.1)
    print(f"resized image {task.payload.decode()} (task {task.id})")


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with Producer(dsn) as producer:
        await producer.enqueue_many(
            [Task("image.resize", f"img-{i}.png".encode()) for i in range(3)]
        )
    async with open_consumer(
        dsn, handlers={"image.resize": resize_image}, poll_interval=0.1
    ) as consumer:
        while consumer.statistics().completed < 3:
            await anyio.sleep(0.05)
    print("done:", consumer.statistics().completed, "images")


if __name__ == "__main__":
    anyio.run(
        main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"], backend="asyncio"
    )
