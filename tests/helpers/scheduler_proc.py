"""A consumer process running a one-second schedule, for tests/test_periodic.py.

Usage: python -m tests.helpers.scheduler_proc DSN CONSUMER_ID

Prints ``ready`` once the consumer runs; SIGTERM or SIGINT stops it gracefully.  Maintenance
runs with a short leadership lease, so killing the leader elects another within seconds.
"""

from __future__ import annotations

import signal
import sys
from datetime import timedelta

import trio

from asynqpg_trio import MaintenanceConfig, Schedule, TaskInfo, open_consumer

TICK = Schedule("tick", every=timedelta(seconds=1), name="tick every second")


async def tick(task: TaskInfo) -> None:
    """Nothing to do: the test counts the tasks' fire tokens."""


async def main(dsn: str, consumer_id: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_consumer(
            dsn,
            handlers={"tick": tick},
            schedules=[TICK],
            consumer_id=consumer_id,
            poll_interval=0.2,
            maintenance=MaintenanceConfig(ttl=3.0, renew_interval=1.0),
        ):
            print("ready", flush=True)
            async for _ in signals:
                break


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
