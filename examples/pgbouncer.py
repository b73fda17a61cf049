"""Producers and consumers behind PgBouncer in transaction pooling mode.

Run: python examples/pgbouncer.py POOLED_DSN [DIRECT_DSN]

POOLED_DSN goes through PgBouncer (``pool_mode = transaction``); DIRECT_DSN, if given, goes
straight to PostgreSQL and carries only the connections that need a session of their own
(each consumer's LISTEN, the migration lock).  Without DIRECT_DSN the consumer runs poll-only:
a new task waits up to ``poll_interval`` before it is claimed.  (Both may name the same
server without PgBouncer in between: the settings work there too.)  See
docs/how-to/deployment.md.
"""

from __future__ import annotations

import sys

import trio

import asynqpg_trio
from asynqpg_trio import Handler, Producer, Task, TaskInfo, open_consumer, open_pool


async def resize(task: TaskInfo) -> None:
    print(f"resized {task.payload.decode()}")


async def main(pooled: str, direct: str | None) -> None:
    if direct is not None:
        await asynqpg_trio.migrate(direct)  # migrations hold a session lock: go direct
    # --8<-- [start:pool]
    async with open_pool(
        pooled,
        max_size=4,
        transaction_pooling=True,  # no server-side prepared statements on pooled connections
        direct_dsn=direct,  # None: poll-only
    ) as pool:
        # --8<-- [end:pool]
        producer = Producer(pool)
        ids = await producer.enqueue_many(
            [Task("image.resize", f"img{i}.png".encode()) for i in range(3)]
        )
        async with open_consumer(
            pool, handlers={"image.resize": Handler(resize, workers=2)}, poll_interval=0.2
        ) as consumer:
            while consumer.statistics().completed < len(ids):
                await trio.sleep(0.05)
    print("listening directly" if pool.has_session else "poll-only", "- done")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
