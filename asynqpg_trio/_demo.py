"""``asynqpg-trio demo``: a realistic mix of tasks through a real consumer, with live progress.

It enqueues several task types (some delayed, some failing and retried, some snoozed, some
rejected for good), runs a consumer until the queue drains, shows a progress bar with counts
per status, and prints a summary.  It exits 0 only when every task ended in the state its kind
intends: everything completed except the deliberately rejected webhooks, which failed.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._config import Handler
from ._consumer import open_consumer
from ._migrate import migrate
from ._outcome import SkipRetry, TaskSnooze
from ._policies import ConstantRetryPolicy
from ._pool import open_pool
from ._producer import Producer
from ._task import Task

if TYPE_CHECKING:
    from ._pool import Pool
    from ._task import TaskInfo

__all__ = ["run_demo"]


@dataclass
class _Tally:
    """What the demo's handlers saw."""

    latencies: list[float] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)
    snoozed: set[int] = field(default_factory=set)


def _mix(n: int, rng: random.Random, prefix: str) -> tuple[list[Task], int]:
    """The tasks to enqueue and how many of them are meant to fail."""
    tasks: list[Task] = []
    rejected = 0
    for i in range(n):
        roll = rng.random()
        if roll < 0.55:
            tasks.append(Task(prefix + "email.send", b'{"to": "user%d@example.com"}' % i))
        elif roll < 0.70:
            fails = rng.choice((0, 1, 2))
            tasks.append(Task(prefix + "report.generate", b"%d" % fails, max_retry=3))
        elif roll < 0.85:
            tasks.append(Task(prefix + "notification.push", b"{}", delay=rng.uniform(0, 2.0)))
        elif roll < 0.95:
            tasks.append(Task(prefix + "invoice.check", b"{}"))
        else:
            tasks.append(Task(prefix + "webhook.deliver", b"bad-url", max_retry=5))
            rejected += 1
    return tasks, rejected


def _handlers(tally: _Tally, rng: random.Random, prefix: str) -> dict[str, Handler]:
    def started(task: TaskInfo) -> None:
        tally.runs[task.type] += 1
        if task.attempts_elapsed == 0 and not task.type.endswith("notification.push"):
            tally.latencies.append(time.time() - task.created_at.timestamp())

    async def email(task: TaskInfo) -> None:
        started(task)
        await trio.sleep(rng.uniform(0, 0.004))

    async def report(task: TaskInfo) -> None:
        started(task)
        if task.attempts_elapsed < int(task.payload):
            raise RuntimeError(f"report backend busy (attempt {task.attempts_elapsed + 1})")

    async def notification(task: TaskInfo) -> None:
        started(task)

    async def invoice(task: TaskInfo) -> None:
        started(task)
        if task.id not in tally.snoozed:
            tally.snoozed.add(task.id)
            raise TaskSnooze(0.3)

    async def webhook(task: TaskInfo) -> None:
        started(task)
        raise SkipRetry("webhook URL is invalid; retrying cannot help")

    return {
        prefix + "email.send": Handler(email, workers=20),
        prefix + "report.generate": Handler(report, workers=5),
        prefix + "notification.push": Handler(notification, workers=5),
        prefix + "invoice.check": Handler(invoice, workers=5),
        prefix + "webhook.deliver": Handler(webhook, workers=2),
    }


async def _counts(pool: Pool, prefix: str) -> dict[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, count(*) FROM asynqpg_tasks"
            " WHERE starts_with(type, %s) GROUP BY status",
            (prefix,),
        )
        return {str(s): int(c) for s, c in await cur.fetchall()}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def run_demo(dsn: str, n: int, console: Console, timeout: float = 300.0) -> int:
    """Run the demo on ``dsn``; return the exit status (0 when every task ended as intended)."""
    rng = random.Random(7)
    await migrate(dsn)
    tally = _Tally()
    # A prefix of its own: the demo never touches other tasks in a shared database.
    prefix = f"demo-{uuid.uuid4().hex[:8]}:"
    tasks, rejected = _mix(n, rng, prefix)
    async with open_pool(dsn, min_size=2, max_size=8) as pool:
        start = time.monotonic()
        await Producer(pool).enqueue_many(tasks)
        console.print(
            f"[bold]asynqpg-trio demo[/bold]: {n} tasks of 5 types enqueued (types {prefix}*)"
        )
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        bar = progress.add_task("processing", total=n)
        counts: dict[str, int] = {}
        async with open_consumer(
            pool,
            handlers=_handlers(tally, rng, prefix),
            retry_policy=ConstantRetryPolicy(0.2),
            poll_interval=0.2,
            maintenance=False,
        ) as consumer:
            with progress, trio.move_on_after(timeout):
                while True:
                    counts = await _counts(pool, prefix)
                    done = counts.get("completed", 0) + counts.get("failed", 0)
                    progress.update(
                        bar,
                        completed=done,
                        description=" ".join(f"{k}={v}" for k, v in sorted(counts.items())),
                    )
                    if done + counts.get("cancelled", 0) >= n:
                        break
                    await trio.sleep(0.1)
            elapsed = time.monotonic() - start
            stats = consumer.statistics()
    expected = {"completed": n - rejected, "failed": rejected}
    ok = {k: v for k, v in counts.items() if v} == {k: v for k, v in expected.items() if v}
    console.print(
        f"{n} tasks in {elapsed:.2f} s ({n / elapsed:,.0f} tasks/s); "
        f"retries {stats.retried}, snoozes {stats.snoozed}, failures {stats.failed}; "
        f"enqueue-to-start latency p50 {_percentile(tally.latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {_percentile(tally.latencies, 0.99) * 1000:.1f} ms"
    )
    if ok:
        console.print(f"[green]every task ended as intended[/green]: {expected}")
        return 0
    console.print(f"[red]unexpected final states[/red]: got {counts}, expected {expected}")
    return 1
