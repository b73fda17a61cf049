"""Periodic tasks: a heartbeat every 2 seconds and a report at 06:00 Berlin time each day.

Run: python examples/periodic.py DSN   (or set ASYNQPG_DSN); it stops after three heartbeats.
The same schedules under the worker command, in as many processes as you like (each fire is
enqueued once, whoever gets there first):

    asynqpg-trio worker examples.periodic:handlers --schedules examples.periodic:schedules
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import trio

import asynqpg_trio
from asynqpg_trio import Schedule, TaskInfo, open_consumer

schedules = [
    Schedule("heartbeat", every=timedelta(seconds=2), payload=b"ok"),
    # After downtime, only the latest missed report is made (catch_up="latest", the default).
    Schedule("report.daily", cron="0 6 * * *", timezone="Europe/Berlin", max_retry=5),
]


async def heartbeat(task: TaskInfo) -> None:
    fired = Schedule.fire_time(task)  # the fire the task stands for (UTC)
    assert fired is not None
    print(f"heartbeat of {fired:%H:%M:%S} UTC: {task.payload.decode()}", flush=True)


async def daily_report(task: TaskInfo) -> None:
    fired = Schedule.fire_time(task)
    assert fired is not None
    print(f"report for {fired:%Y-%m-%d}", flush=True)


handlers = {"heartbeat": heartbeat, "report.daily": daily_report}


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    async with open_consumer(dsn, handlers=handlers, schedules=schedules) as consumer:
        print("consumer running with 2 schedules", flush=True)
        while consumer.statistics().completed < 3:
            await trio.sleep(0.1)
    print("done: 3 heartbeats")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])
