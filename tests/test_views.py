"""The shared view formatting (`_core._views`): pure functions, tested without an event loop.

The CLI and the dashboard both render through these; `test_cli.py` and `test_web_api.py` prove
their end-to-end output, these pin the formats themselves, including the one deliberate
difference (the dashboard puts a space between the two units of an age).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from asynqpg_trio._core._queues import Limit, QueueInfo
from asynqpg_trio._core._records import QueueStats, TypeStats
from asynqpg_trio._core._views import (
    describe_limit,
    format_age,
    format_period,
    format_utc,
    limit_document,
    queue_document,
    split_csv,
    stats_document,
)


@pytest.mark.parametrize(
    ("seconds", "terminal", "page"),
    [
        (None, "-", "-"),
        (0, "0s", "0s"),
        (59.99, "59s", "59s"),
        (60, "1m00s", "1m 00s"),
        (185, "3m05s", "3m 05s"),
        (3599, "59m59s", "59m 59s"),
        (3600, "1h00m", "1h 00m"),
        (2 * 3600 + 10 * 60 + 59, "2h10m", "2h 10m"),
        (86399, "23h59m", "23h 59m"),
        (4 * 86400 + 3 * 3600, "4d03h", "4d 03h"),
    ],
)
def test_format_age(seconds: float | None, terminal: str, page: str) -> None:
    assert format_age(seconds) == terminal
    assert format_age(seconds, sep=" ") == page


def test_format_utc() -> None:
    assert format_utc(None) == "-"
    plus_two = timezone(timedelta(hours=2))
    assert format_utc(datetime(2024, 5, 1, 14, 0, 7, 999, tzinfo=plus_two)) == (
        "2024-05-01 12:00:07"
    )
    assert format_utc(datetime(2024, 5, 1, 12, 0, tzinfo=UTC)) == "2024-05-01 12:00:00"


def test_split_csv() -> None:
    assert split_csv("") == []
    assert split_csv(" a, ,b ,,c") == ["a", "b", "c"]


def test_stats_document() -> None:
    counts = MappingProxyType({"pending": 2, "running": 0})
    stats = QueueStats(
        total=2,
        by_status=counts,
        by_type=(TypeStats(type="q", total=2, by_status=counts, oldest_pending_age=1.5),),
    )
    assert stats_document(stats) == {
        "total": 2,
        "by_status": {"pending": 2, "running": 0},
        "by_type": [
            {
                "type": "q",
                "total": 2,
                "by_status": {"pending": 2, "running": 0},
                "oldest_pending_age": 1.5,
            }
        ],
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1s"), (0.5, "0.5s"), (1.25, "1.25s"), (59, "59s"), (60, "1m"), (90, "90s"),
     (120, "2m"), (3600, "1h"), (5400, "90m"), (7200, "2h"), (86400, "1d"), (90000, "25h")],
)  # fmt: skip
def test_format_period(seconds: float, text: str) -> None:
    assert format_period(seconds) == text


def test_describe_limit() -> None:
    assert describe_limit(10, None, None, None) == "at most 10 running"
    assert describe_limit(None, 100, 60.0, 100) == "100 per 1m"
    assert describe_limit(0, 5, 1.0, 20) == "at most 0 running; 5 per 1s, in bursts of up to 20"
    assert describe_limit(None, None, None, None) == "no limit"


def test_queue_and_limit_documents() -> None:
    queue = QueueInfo("mail", True, {"pending": 2, "failed": 1}, 1.5)
    assert queue_document(queue) == {
        "name": "mail",
        "paused": True,
        "total": 3,
        "counts": {"pending": 2, "running": 0, "completed": 0, "failed": 1, "cancelled": 0},
        "oldest_ready_age": 1.5,
    }
    limit = Limit("type", "api.call", None, 100, 1.0, 20, 3)
    assert limit_document(limit) == {
        "scope": "type",
        "name": "api.call",
        "max_running": None,
        "rate": 100,
        "per": 1.0,
        "burst": 20,
        "running": 3,
    }
