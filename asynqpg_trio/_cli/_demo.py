"""``asynqpg-trio demo``: a realistic mix of tasks through a real consumer, with live progress.

It enqueues several task types (some delayed, some failing and retried, some snoozed, some
rejected for good), runs a consumer until the queue drains, shows a progress bar with counts
per status, and prints a summary (or, with ``--json``, one JSON document; the progress then
goes to stderr) and what to look at next.  It exits 0 only when every task ended in the state
its kind intends: everything completed except the deliberately rejected webhooks, which failed.

On a database of yours (``--dsn`` or ``$ASYNQPG_DSN``) it says so before it starts: it applies
the schema migrations if needed (those stay), gives its task types a prefix of their own
(``demo-<8 hex>:``) so it never touches other tasks, and deletes its tasks when it ends, even
when interrupted, unless ``--keep`` asks to leave them for ``tasks list``, ``stats`` or the
dashboard.  On the embedded server nothing is left: the whole server is thrown away.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from .._api._producer import Producer
from .._consumer._open import open_consumer
from .._core._config import ConsumerStatistics, Handler
from .._core._outcome import SkipRetry, TaskSnooze
from .._core._policies import ConstantRetryPolicy
from .._core._task import Task
from .._pg import _client_repo as client_repo
from .._pg._migrate import LATEST_VERSION, migrate
from .._pg._pool import open_pool

if TYPE_CHECKING:
    from .._core._task import TaskInfo
    from .._pg._pool import Pool

__all__ = ["DemoSummary", "print_summary", "run_demo", "summary_json"]


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
        return await client_repo.status_counts_by_type_prefix(conn, prefix)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def _delete_tasks(pool: Pool, prefix: str) -> int:
    async with pool.connection() as conn:
        return await client_repo.delete_by_type_prefix(conn, prefix)


@dataclass(frozen=True)
class DemoSummary:
    """What a demo run did, for the summary (``--json`` prints it as is)."""

    ok: bool
    tasks: int
    seconds: float
    tasks_per_second: float
    final: dict[str, int]
    expected: dict[str, int]
    retried: int
    snoozed: int
    failed: int
    latency_p50_ms: float
    latency_p99_ms: float
    database: str
    migrated: list[int]
    type_prefix: str
    kept: bool
    deleted: int


async def run_demo(
    dsn: str,
    n: int,
    console: Console,
    *,
    database: str,
    keep: bool,
    timeout: float = 300.0,
) -> DemoSummary:
    """Run the demo on ``dsn`` (described as ``database``) with progress on ``console``.

    Its tasks are deleted at the end, even when cancelled, unless ``keep`` (none is running
    by then: the consumer released its leases on the way out).

    Cancellation: a checkpoint; the consumer shuts down gracefully and (unless ``keep``) the
    demo's tasks are deleted, shielded for up to 10 s.
    """
    rng = random.Random(7)
    migrated = await migrate(dsn)
    if migrated:
        console.print(Text(f"applied asynqpg schema version {LATEST_VERSION} to {database}"))
    tally = _Tally()
    # A prefix of its own: the demo never touches other tasks in a shared database.
    prefix = f"demo-{uuid.uuid4().hex[:8]}:"
    tasks, rejected = _mix(n, rng, prefix)
    deleted = 0
    async with open_pool(dsn, min_size=2, max_size=8) as pool:
        try:
            start = time.monotonic()
            await Producer(pool).enqueue_many(tasks)
            console.print(
                Text.assemble(
                    ("asynqpg-trio demo", "bold"),
                    f": {n} tasks of 5 types enqueued (types {prefix}*)",
                )
            )
            counts, stats = await _process(pool, n, tally, rng, prefix, console, timeout)
            elapsed = time.monotonic() - start
        finally:
            if not keep:
                with trio.move_on_after(10, shield=True):
                    deleted = await _delete_tasks(pool, prefix)
    expected = {"completed": n - rejected, "failed": rejected}
    final = {k: v for k, v in sorted(counts.items()) if v}
    return DemoSummary(
        ok=final == {k: v for k, v in expected.items() if v},
        tasks=n,
        seconds=round(elapsed, 3),
        tasks_per_second=round(n / elapsed, 1),
        final=final,
        expected=expected,
        retried=stats.retried,
        snoozed=stats.snoozed,
        failed=stats.failed,
        latency_p50_ms=round(_percentile(tally.latencies, 0.5) * 1000, 1),
        latency_p99_ms=round(_percentile(tally.latencies, 0.99) * 1000, 1),
        database=database,
        migrated=migrated,
        type_prefix=prefix,
        kept=keep,
        deleted=deleted,
    )


async def _process(
    pool: Pool,
    n: int,
    tally: _Tally,
    rng: random.Random,
    prefix: str,
    console: Console,
    timeout: float,
) -> tuple[dict[str, int], ConsumerStatistics]:
    """Run a consumer until the demo's tasks are all final (or ``timeout``); show progress."""
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
    return counts, consumer.statistics()


def summary_json(summary: DemoSummary) -> str:
    """The summary as one line of JSON."""
    return json.dumps(asdict(summary))


def print_summary(summary: DemoSummary, console: Console, *, embedded: bool) -> None:
    """The summary for people: what happened, what was left behind, what to look at next."""
    s = summary

    def say(text: str, style: str = "") -> None:
        console.print(Text(text, style=style))

    say(f"{s.tasks} tasks in {s.seconds:.2f} s ({s.tasks_per_second:,.0f} tasks/s)")
    say(f"retries {s.retried}, snoozes {s.snoozed}, failures {s.failed}")
    say(f"enqueue-to-start latency p50 {s.latency_p50_ms:.1f} ms, p99 {s.latency_p99_ms:.1f} ms")
    if s.ok:
        say(f"every task ended as intended: {s.expected}", "green")
    else:
        say(f"unexpected final states: got {s.final}, expected {s.expected}", "red")
    if embedded:
        say("the embedded PostgreSQL and its tasks are thrown away now")
    elif s.kept:
        say(
            f"the demo's {s.tasks} tasks stay in {s.database} (types {s.type_prefix}*): "
            "see them with `asynqpg-trio stats` or `asynqpg-trio tasks list`"
        )
    else:
        say(f"deleted the demo's {s.deleted} tasks from {s.database} (--keep leaves them)")
    say("")
    say("Next:", "bold")
    width = max(len(what) for what, _ in _NEXT)
    for what, why in _NEXT:
        say(f"  {what:<{width}}  {why}")


_NEXT: tuple[tuple[str, str], ...] = (
    ("asynqpg-trio --help", "enqueue, tasks list|show|retry|..., stats --watch"),
    ("asynqpg-trio worker examples.worker_app:handlers", "run the handlers of your own module"),
    ("asynqpg-trio dashboard", "the web dashboard (needs the web extra: pip install '.[web]')"),
    ("examples/ in the source tree", "quickstart.py, trio_consumer.py, anyio_consumer.py"),
)
