"""How queue values read to people and scripts, shared by the command line and the dashboard.

Theory of operation
-------------------
The CLI (``_cli/_render.py``) and the dashboard (``web/``) show the same things: queue stats
as JSON, the named queues and the cluster-wide limits as JSON and as a sentence, a task's
times in UTC, queue lag as a short duration, and comma-separated filters.
Each is defined once here so the two cannot drift; where their outputs differ on purpose the
difference is an argument (`format_age`'s ``sep``: ``3m05s`` in a terminal table, ``3m 05s``
on a page), and what only one of them adds (the dashboard's overall ``oldest_pending_age``)
stays with it.

Everything here is a pure function of its arguments.  Nothing reads a clock: ages arrive as
seconds already measured (by the database, against its own clock), so output depends only on
input and the functions are tested without an event loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ._queues import Limit, QueueInfo
from ._records import QueueStats
from ._row import TaskStatus

__all__ = [
    "describe_limit",
    "format_age",
    "format_period",
    "format_utc",
    "limit_document",
    "queue_document",
    "split_csv",
    "stats_document",
]

#: Periods shown in a unit of their own when they are whole multiples of it, largest first.
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0))


def format_utc(moment: datetime | None) -> str:
    """``moment`` in UTC as ``YYYY-MM-DD HH:MM:SS`` (no offset shown), or ``-`` for None."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_age(seconds: float | None, sep: str = "") -> str:
    """Seconds as a short duration in its two largest units, the smaller one zero-padded.

    ``-`` for None; else (whole seconds, fractions dropped) ``42s``, ``3m05s``, ``2h10m``,
    ``4d03h``, with ``sep`` between the two units (``sep=" "`` gives ``3m 05s``).
    """
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{sep}{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{sep}{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{sep}{whole % 86400 // 3600:02d}h"


def stats_document(stats: QueueStats) -> dict[str, Any]:
    """Queue stats as JSON-ready data: totals, counts by status, and per type (sorted by type,
    as `QueueStats` keeps them) its counts and ``oldest_pending_age`` (seconds or None)."""
    return {
        "total": stats.total,
        "by_status": dict(stats.by_status),
        "by_type": [
            {
                "type": t.type,
                "total": t.total,
                "by_status": dict(t.by_status),
                "oldest_pending_age": t.oldest_pending_age,
            }
            for t in stats.by_type
        ],
    }


def split_csv(text: str) -> list[str]:
    """A comma-separated list: items trimmed, empty items dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def queue_document(queue: QueueInfo) -> dict[str, Any]:
    """A queue as JSON-ready data: its name, whether it is paused, its counts with every
    status as a key (zero for those it has none of) and their total, and
    ``oldest_ready_age`` (seconds or None)."""
    counts = {s.value: int(queue.counts.get(s.value, 0)) for s in TaskStatus}
    return {
        "name": queue.name,
        "paused": queue.paused,
        "total": sum(counts.values()),
        "counts": counts,
        "oldest_ready_age": queue.oldest_ready_age,
    }


def limit_document(limit: Limit) -> dict[str, Any]:
    """A cluster-wide limit as JSON-ready data (``per`` in seconds; None fields: no such
    part), with ``running``: its tasks running now."""
    return {
        "scope": limit.scope,
        "name": limit.name,
        "max_running": limit.max_running,
        "rate": limit.rate,
        "per": limit.per,
        "burst": limit.burst,
        "running": limit.running,
    }


def format_period(seconds: float) -> str:
    """A rate's period: ``1s``, ``0.5s``, ``90s``, ``1m``, ``2h``, ``1d`` (a unit is used when
    the period is a whole number of it)."""
    for unit, size in _UNITS:
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def describe_limit(
    max_running: int | None, rate: int | None, per: float | None, burst: int | None
) -> str:
    """A limit in words: ``at most 10 running; 100 per 1s, in bursts of up to 150``."""
    parts: list[str] = []
    if max_running is not None:
        parts.append(f"at most {max_running} running")
    if rate is not None and per is not None:
        text = f"{rate} per {format_period(per)}"
        if burst is not None and burst != rate:
            text += f", in bursts of up to {burst}"
        parts.append(text)
    return "; ".join(parts) or "no limit"
