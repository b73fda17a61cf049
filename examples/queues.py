"""Named queues, priorities, pause and resume, and a cluster-wide limit, in one run.

Three reports go on the queue "reports", paused before they are enqueued, at three
priorities; three emails go on the queue "mail", limited across every consumer to one running
at a time and 100 starts a minute.  One consumer serves both queues, holding at most one
report at a time.  The mail goes out while the reports wait in their paused queue; once the
queue is resumed the reports run most urgent first.  At the end the limit is removed and the
queue is left resumed, so the database keeps only the finished tasks.

Run: python examples/queues.py DSN   (or set ASYNQPG_DSN)
"""

from __future__ import annotations

import os
import sys

import trio

import asynqpg_trio
from asynqpg_trio import Client, Producer, Task, TaskInfo, open_consumer, open_pool

REPORTS = [("daily", -3), ("quarterly", 5), ("weekly", 0)]  # (name, priority)
EMAILS = [f"user{i}@example.com" for i in range(3)]


async def send_mail(task: TaskInfo) -> None:
    print(f"sent mail to {task.payload.decode()}")


async def build_report(task: TaskInfo) -> None:
    print(f"built the {task.payload.decode()} report (priority {task.priority})")


async def show_queues(client: Client) -> None:
    for queue in await client.queues():
        if queue.name in ("mail", "reports"):
            state = "paused" if queue.paused else "active"
            counts = ", ".join(f"{n} {status}" for status, n in sorted(queue.counts.items()))
            print(f"queue {queue.name} ({state}): {counts or 'empty'}")


async def wait_for(consumer: asynqpg_trio.Consumer, completed: int) -> None:
    while consumer.statistics().completed < completed:
        await trio.sleep(0.05)


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with open_pool(dsn, max_size=8) as pool:
        client = Client(pool)
        await client.pause_queue("reports")  # a queue can be paused before it has tasks
        await client.set_limit(queue="mail", max_running=1, rate=100, per=60, burst=10)
        for limit in await client.limits():
            print(
                f"limit on {limit.scope} {limit.name}: max_running={limit.max_running}, "
                f"rate={limit.rate} per {limit.per:g} s, burst={limit.burst}"
            )
        producer = Producer(pool)
        await producer.enqueue_many(
            [
                Task("report.build", name.encode(), queue="reports", priority=p)
                for name, p in REPORTS
            ]
        )
        await producer.enqueue_many([Task("mail.send", to.encode(), queue="mail") for to in EMAILS])
        await show_queues(client)

        handlers = {"mail.send": send_mail, "report.build": build_report}
        # Serve "mail" and "reports"; hold at most one report at a time, so each claim takes
        # the most urgent report left.
        async with open_consumer(
            pool, handlers=handlers, queues={"mail": None, "reports": 1}
        ) as consumer:
            await wait_for(consumer, len(EMAILS))
            await show_queues(client)  # the reports are still pending: their queue is paused
            await client.resume_queue("reports")  # idle consumers wake at once
            print("resumed queue reports")
            await wait_for(consumer, len(EMAILS) + len(REPORTS))
        await show_queues(client)
        await client.clear_limit(queue="mail")
    print("done")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
