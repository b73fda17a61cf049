"""How the command line shows results: JSON for scripts, rich tables for people.

Theory of operation
-------------------
Every result has two forms.  ``*_json`` functions return plain JSON-ready data (times as ISO
8601 with offset, payloads as UTF-8 text when they decode, always also as base64; listed tasks
carry only ``payload_size``, as lists never read payloads), printed one document per line so
``--watch --json`` is JSON Lines.  ``*_table`` functions return rich renderables; times are
shown in UTC.  With ``full`` (stdout is not a terminal) tables cut nothing: whole type names,
whole last messages with line breaks written as ``\\n``; else long values are shortened with
``…`` to fit the terminal.  Nothing here reads the database or the clock: `age` is given
seconds.  The stats document, UTC times and ages are `_core._views`'s, shared with the
dashboard.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, OverflowMethod
from rich.table import Table
from rich.text import Text

from .._core._queues import Limit, QueueInfo
from .._core._records import QueueStats, TaskPage, TaskRecord, TaskSummary
from .._core._row import TaskStatus
from .._core._views import (
    describe_limit,
    format_age,
    format_utc,
    limit_document,
    queue_document,
    stats_document,
)

__all__ = [
    "limits_json",
    "limits_table",
    "page_json",
    "page_table",
    "plural",
    "queues_json",
    "queues_table",
    "stats_json",
    "stats_table",
    "summary_json",
    "task_json",
    "task_line",
    "task_table",
]

_STYLE = {
    TaskStatus.PENDING: "cyan",
    TaskStatus.RUNNING: "yellow",
    TaskStatus.COMPLETED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "magenta",
}
_PREVIEW = 60


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _text_payload(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def task_json(task: TaskRecord) -> dict[str, Any]:
    """A task as JSON-ready data (``payload`` is None when it is not UTF-8 text)."""
    return _task_json(task, task.payload)


def summary_json(task: TaskSummary) -> dict[str, Any]:
    """A listed task as JSON-ready data: `task_json` without ``payload`` and
    ``payload_base64``."""
    return _task_json(task, None)


def _task_json(task: TaskRecord | TaskSummary, payload: bytes | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "queue": task.queue,
        "priority": task.priority,
        "status": task.status.value,
    }
    if payload is not None:
        data["payload"] = _text_payload(payload)
        data["payload_base64"] = base64.b64encode(payload).decode()
    return data | {
        "payload_size": task.payload_size,
        "idempotency_token": task.idempotency_token,
        "messages": list(task.messages),
        "blocked_till": _iso(task.blocked_till),
        "attempts_left": task.attempts_left,
        "attempts_elapsed": task.attempts_elapsed,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "finalized_at": _iso(task.finalized_at),
        "attempted_at": _iso(task.attempted_at),
        "lease_token": task.lease_token,
        "lease_owner": task.lease_owner,
    }


def page_json(page: TaskPage) -> dict[str, Any]:
    """A page of tasks as JSON-ready data."""
    return {
        "tasks": [summary_json(t) for t in page.tasks],
        "total": page.total,
        "next_cursor": page.next_cursor,
    }


def stats_json(stats: QueueStats) -> dict[str, Any]:
    """Queue stats as JSON-ready data (``by_type`` sorted by type)."""
    return stats_document(stats)


def _status(status: TaskStatus) -> Text:
    return Text(status.value, style=_STYLE[status])


def _preview(text: str, *, full: bool) -> str:
    if full:
        return text.replace("\\", "\\\\").replace("\n", "\\n")
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= _PREVIEW else line[: _PREVIEW - 1] + "…"


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, with an ``s`` unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def age(seconds: float | None) -> str:
    """Seconds as a short human duration: ``-``, ``42s``, ``3m05s``, ``2h10m``, ``4d03h``."""
    return format_age(seconds)


def page_table(page: TaskPage, offset: int, *, full: bool = False) -> Group:
    """A page of tasks as a table plus a line saying where it is in the total."""
    overflow: OverflowMethod = "fold" if full else "ellipsis"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    table.add_column("Queue", no_wrap=True)
    table.add_column("Pri", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Runs", justify="right", no_wrap=True)
    table.add_column("Created (UTC)", no_wrap=True)
    table.add_column("Blocked till (UTC)", no_wrap=True)
    table.add_column("Last message", overflow=overflow)
    for t in page.tasks:
        table.add_row(
            str(t.id),
            t.type,
            t.queue,
            str(t.priority),
            _status(t.status),
            f"{t.attempts_elapsed}/{t.attempts_elapsed + t.attempts_left}",
            format_utc(t.created_at),
            format_utc(t.blocked_till),
            _preview(t.messages[-1], full=full) if t.messages else "",
        )
    if page.tasks:
        where = f"{offset + 1}-{offset + len(page.tasks)} of {page.total}"
        footer = f"{plural(len(page.tasks), 'task')} shown ({where} matching)"
    else:
        footer = f"no tasks on this page ({page.total} matching)"
    if page.next_cursor:
        footer += f"; next page: --after {page.next_cursor}"
    return Group(table, Text(footer, style="dim"))


def task_table(task: TaskRecord) -> Table:
    """Every field of one task, one per row."""
    table = Table(box=box.SIMPLE, show_header=False, show_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    text = _text_payload(task.payload)
    payload = text if text is not None else "base64:" + base64.b64encode(task.payload).decode()
    rows: list[tuple[str, str | Text]] = [
        ("id", str(task.id)),
        ("type", task.type),
        ("queue", task.queue),
        ("priority", str(task.priority)),
        ("status", _status(task.status)),
    ]
    if task.progress is not None:
        note = "" if task.progress_note is None else f"  {task.progress_note}"
        at = f"  (at {format_utc(task.progress_at)} UTC)" if task.progress_at else ""
        # Text, not markup: the bar's brackets and the handler's note are shown as they are.
        rows.append(("progress", Text(f"{_bar(task.progress)} {task.progress:.0%}{note}{at}")))
    if task.result_size is not None:
        rows.append(("result", f"{task.result_size} bytes (read it with Client.get_result)"))
    rows += [
        ("payload", f"{payload}  ({len(task.payload)} bytes)"),
        ("idempotency token", task.idempotency_token or "-"),
        ("attempts", f"{task.attempts_elapsed} run, {task.attempts_left} left"),
        ("created (UTC)", format_utc(task.created_at)),
        ("updated (UTC)", format_utc(task.updated_at)),
        ("blocked till (UTC)", format_utc(task.blocked_till)),
        ("attempted (UTC)", format_utc(task.attempted_at)),
        ("finalized (UTC)", format_utc(task.finalized_at)),
        ("lease", "-" if task.lease_token is None else f"{task.lease_token} ({task.lease_owner})"),
    ]
    for number, message in enumerate(task.messages, 1):
        rows.append((f"message {number}", message))
    for field, value in rows:
        table.add_row(field, value)
    return table


def _bar(fraction: float, width: int = 20) -> str:
    """A text progress bar: ``[#####.....]``."""
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def task_line(verb: str, task: TaskRecord) -> str:
    """One line confirming a single-task action."""
    return f"{verb} task {task.id} ({task.type}); status now {task.status.value}"


def stats_table(stats: QueueStats, *, full: bool = False) -> Group:
    """Totals by status, then one row per type with its counts and queue lag.

    The lag column is `TypeStats.oldest_pending_age`: how long the longest-waiting ready
    pending task of that type has been ready.
    """
    statuses = [s.value for s in TaskStatus]
    totals = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for s in statuses:
        totals.add_column(s, justify="right", style=_STYLE[TaskStatus(s)])
    totals.add_column("total", justify="right", style="bold")
    totals.add_row(*(str(stats.by_status[s]) for s in statuses), str(stats.total))
    types = Table(box=box.SIMPLE_HEAD, show_edge=False)
    types.add_column("type", overflow="fold" if full else "ellipsis")
    for s in statuses:
        types.add_column(s, justify="right", no_wrap=True)
    types.add_column("total", justify="right", no_wrap=True)
    types.add_column("lag", justify="right", no_wrap=True)
    for t in stats.by_type:
        types.add_row(
            t.type,
            *(str(t.by_status[s]) for s in statuses),
            str(t.total),
            age(t.oldest_pending_age),
        )
    if not stats.by_type:
        return Group(totals, Text("no tasks", style="dim"))
    return Group(totals, types)


def queues_json(queues: tuple[QueueInfo, ...]) -> dict[str, Any]:
    """The queues as JSON-ready data: ``{"queues": [...]}``, by name."""
    return {"queues": [queue_document(q) for q in queues]}


def queues_table(queues: tuple[QueueInfo, ...], *, full: bool = False) -> Table | Text:
    """One row per queue: paused or not, its counts per status, and its queue lag (how long
    its longest-waiting ready task has waited)."""
    if not queues:
        return Text("no queues: no tasks, and none paused", style="dim")
    statuses = [s.value for s in TaskStatus]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("queue", overflow="fold" if full else "ellipsis")
    table.add_column("state", no_wrap=True)
    for s in statuses:
        table.add_column(s, justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("lag", justify="right", no_wrap=True)
    for q in queues:
        doc = queue_document(q)
        table.add_row(
            q.name,
            Text("paused", style="bold red") if q.paused else Text("active", style="green"),
            *(str(doc["counts"][s]) for s in statuses),
            str(doc["total"]),
            age(q.oldest_ready_age),
        )
    return table


def limits_json(limits: tuple[Limit, ...]) -> dict[str, Any]:
    """The limits as JSON-ready data: ``{"limits": [...]}``, by scope and name."""
    return {"limits": [limit_document(lim) for lim in limits]}


def limits_table(limits: tuple[Limit, ...], *, full: bool = False) -> Table | Text:
    """One row per cluster-wide limit: what it limits, the limit in words, and its tasks
    running now."""
    if not limits:
        return Text("no limits", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("scope", no_wrap=True)
    table.add_column("name", overflow="fold" if full else "ellipsis")
    table.add_column("limit")
    table.add_column("running", justify="right", no_wrap=True)
    for lim in limits:
        table.add_row(
            lim.scope,
            lim.name,
            describe_limit(lim.max_running, lim.rate, lim.per, lim.burst),
            str(lim.running),
        )
    return table
