"""How queue values read to people and scripts, shared by the command line and the dashboard.

Theory of operation
-------------------
The CLI (``_cli/_render.py``) and the dashboard (``web/``) show the same things: queue stats
as JSON, a task's times in UTC, queue lag as a short duration, and comma-separated filters.
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

from ._records import QueueStats

__all__ = ["format_age", "format_utc", "split_csv", "stats_document"]


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
