"""A consumer run in a separate OS process by the tests.

Usage: python -m tests.helpers.consumer_proc DSN MODE OUTFILE [SECONDS]

MODE ``record``: handle type ``work`` by appending the task id to OUTFILE, until the queue has
no pending or running ``work`` task left (or SECONDS pass).  MODE ``slow``: the same, each
task taking 20 ms.  MODE ``crash``: the handler ends
the process at once (os._exit), leaving its task running with a lease.
"""

from __future__ import annotations

import os
import sys

import psycopg
import trio

from asynqpg_trio import Handler, TaskInfo, open_consumer


async def main(dsn: str, mode: str, outfile: str, seconds: float) -> None:
    with open(outfile, "a", buffering=1) as out:

        async def record(task: TaskInfo) -> None:
            out.write(f"{task.id}\n")

        async def slow(task: TaskInfo) -> None:
            await trio.sleep(0.02)
            out.write(f"{task.id}\n")

        async def crash(task: TaskInfo) -> None:
            out.write(f"{task.id}\n")
            out.flush()
            os._exit(3)

        handler = {"record": record, "slow": slow}.get(mode, crash)
        async with open_consumer(
            dsn,
            handlers={"work": Handler(handler, workers=8)},
            lease_duration=2.0,
            poll_interval=0.2,
            maintenance=False,
        ):
            with trio.move_on_after(seconds):
                while True:
                    await trio.sleep(0.2)
                    with psycopg.connect(dsn) as conn:
                        row = conn.execute(
                            "SELECT count(*) FROM asynqpg_tasks WHERE type = 'work'"
                            " AND status IN ('pending', 'running')"
                        ).fetchone()
                    if row is not None and row[0] == 0:
                        break


if __name__ == "__main__":
    trio.run(
        main,
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        float(sys.argv[4]) if len(sys.argv) > 4 else 60.0,
    )
