"""The consumer registry: two consumers, and what `asynqpg-trio consumers` shows of them.

Run: python examples/consumers.py DSN   (or set ASYNQPG_DSN).  Two consumers each hold one
`video.encode` task; the registry (which the dashboard's Consumers page shows too) lists both,
with the task each runs.  Then they shut down gracefully and leave the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import trio

import asynqpg_trio
from asynqpg_trio import Handler, Producer, Task, TaskInfo, open_consumer


def consumers(dsn: str) -> list[dict[str, object]]:
    """What `asynqpg-trio consumers --json` says."""
    command = [sys.executable, "-m", "asynqpg_trio._cli"]  # the `asynqpg-trio` command
    out = subprocess.run(
        [*command, "consumers", "--dsn", dsn, "--json"], capture_output=True, text=True, check=True
    ).stdout
    found: list[dict[str, object]] = json.loads(out)["consumers"]
    return found


async def main(dsn: str) -> None:
    await asynqpg_trio.migrate(dsn)
    started, release = trio.Event(), trio.Event()
    running = 0

    async def encode(task: TaskInfo) -> None:
        nonlocal running
        running += 1
        if running == 2:
            started.set()
        await release.wait()

    handlers = {"video.encode": Handler(encode, workers=1)}
    async with asynqpg_trio.open_pool(dsn) as pool:
        for _ in range(2):
            await Producer(pool).enqueue(Task("video.encode", b"{}"))
        async with (
            open_consumer(pool, handlers=handlers, consumer_id="encoder-1", prefetch=0),
            open_consumer(pool, handlers=handlers, consumer_id="encoder-2", prefetch=0),
        ):
            await started.wait()
            for row in await trio.to_thread.run_sync(consumers, dsn):
                tasks = [t["id"] for t in row["running"]]  # type: ignore[attr-defined]
                print(f"{row['id']} on {row['host']}: running tasks {tasks}", flush=True)
            release.set()
    left = await trio.to_thread.run_sync(consumers, dsn)
    print(f"after shutdown: {len(left)} consumers registered")


if __name__ == "__main__":
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ASYNQPG_DSN", "")
    if not dsn:
        sys.exit("usage: python examples/consumers.py DSN   (or set ASYNQPG_DSN)")
    trio.run(main, dsn)
