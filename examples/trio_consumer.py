"""A Trio app that enqueues a few tasks and processes them with `open_consumer`.

Run: python examples/trio_consumer.py DSN   (or set ASYNQPG_DSN)
"""

from __future__ import annotations

import json
import os
import sys

import trio

import asynqpg_trio
from asynqpg_trio import Handler, Producer, SkipRetry, Task, TaskInfo, open_consumer, open_pool


async def send_email(task: TaskInfo) -> None:
    message = json.loads(task.payload)
    if "@" not in message["to"]:
        raise SkipRetry(f"invalid address {message['to']!r}")
    await trio.sleep(0.01)  # pretend to talk to an SMTP server
    print(f"sent email {task.id} to {message['to']}")


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with open_pool(dsn, max_size=8) as pool:
        producer = Producer(pool)
        ids = await producer.enqueue_many(
            [
                Task("email.send", json.dumps({"to": f"user{i}@example.com"}).encode())
                for i in range(5)
            ]
        )
        async with open_consumer(
            pool, handlers={"email.send": Handler(send_email, workers=4)}
        ) as consumer:
            while consumer.statistics().completed < len(ids):
                await trio.sleep(0.05)
        print("done:", consumer.statistics().completed, "emails")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
