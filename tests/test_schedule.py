"""`Schedule` and its fire times, on pinned clocks (no event loop, no database).

The DST tests walk a clock across Europe/Berlin's two changes of 2026 the way a running
scheduler does (each round plans the fires since the previous one) and check which instants
fire: clocks forward on 2026-03-29 (02:00 CET -> 03:00 CEST, 01:00 UTC) and back on
2026-10-25 (03:00 CEST -> 02:00 CET, 01:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asynqpg_trio import ConfigurationError, Schedule, TaskInfo
from asynqpg_trio._core._schedule import (
    MAX_CATCH_UP,
    check_schedules,
    fires_after,
    plan_fires,
)
from asynqpg_trio._core._schedule_spec import token

BERLIN = "Europe/Berlin"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def walk(schedule: Schedule, start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Every fire a scheduler waking each ``step`` from ``start`` to ``end`` enqueues."""
    fired: list[datetime] = []
    cursor = start
    while cursor < end:
        now = min(cursor + step, end)
        fired += plan_fires(schedule, cursor, now, grace=60.0).fires
        cursor = now
    return fired


def hhmm(fires: list[datetime]) -> list[str]:
    return [f.strftime("%m-%d %H:%M") for f in fires]


# --- DST, clocks forward (2026-03-29) ----------------------------------------------------------


def test_a_fire_in_the_skipped_hour_runs_once_right_after_the_jump() -> None:
    schedule = Schedule("report", cron="30 2 * * *", timezone=BERLIN)
    fires = walk(schedule, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12), timedelta(minutes=7))
    # 02:30 CET on the 28th, 03:00 CEST (right after the jump) on the 29th, then 02:30 CEST.
    assert hhmm(fires) == ["03-28 01:30", "03-29 01:00", "03-30 00:30", "03-31 00:30"]


def test_an_hourly_schedule_stays_hourly_across_the_jump() -> None:
    schedule = Schedule("tick", cron="0 * * * *", timezone=BERLIN)
    fires = walk(schedule, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 3, 30), timedelta(seconds=7))
    # Local 01:00 CET, 03:00 CEST, 04:00, 05:00: one per real hour, 02:00 does not exist.
    assert hhmm(fires) == ["03-29 00:00", "03-29 01:00", "03-29 02:00", "03-29 03:00"]


def test_a_wildcard_minute_in_the_skipped_hour_does_not_run() -> None:
    # Debian cron's "wildcard" jobs run on elapsed time: 02:xx does not exist that day.
    schedule = Schedule("tick", cron="*/30 2 * * *", timezone=BERLIN)
    fires = walk(schedule, utc(2026, 3, 27, 12), utc(2026, 3, 29, 12), timedelta(minutes=5))
    assert hhmm(fires) == ["03-28 01:00", "03-28 01:30"]


# --- DST, clocks back (2026-10-25) -------------------------------------------------------------


def test_a_fire_in_the_repeated_hour_runs_once_not_twice() -> None:
    schedule = Schedule("report", cron="30 2 * * *", timezone=BERLIN)
    fires = walk(schedule, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), timedelta(minutes=7))
    # 02:30 CEST (00:30 UTC) on the 25th, not again at 02:30 CET (01:30 UTC).
    assert hhmm(fires) == ["10-25 00:30", "10-26 01:30"]


def test_a_fire_in_the_repeated_hour_is_not_repeated_by_a_start_in_its_second_pass() -> None:
    schedule = Schedule("report", cron="30 2 * * *", timezone=BERLIN, catch_up="skip")
    # A scheduler starting at 02:15 CET (the second pass; 02:30 CEST fired 45 minutes ago).
    plan = plan_fires(schedule, utc(2026, 10, 25, 1, 15), utc(2026, 10, 25, 1, 15))
    assert plan.next_fire == utc(2026, 10, 26, 1, 30)
    assert (
        walk(schedule, utc(2026, 10, 25, 1, 15), utc(2026, 10, 25, 23), timedelta(minutes=7)) == []
    )


def test_an_hourly_schedule_fires_in_both_passes_of_the_repeated_hour() -> None:
    schedule = Schedule("tick", cron="0 * * * *", timezone=BERLIN)
    fires = walk(
        schedule, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30), timedelta(seconds=7)
    )
    # 02:00 CEST and 02:00 CET are an hour apart: hourly stays hourly.
    assert hhmm(fires) == ["10-25 00:00", "10-25 01:00", "10-25 02:00"]


def test_a_daily_schedule_keeps_its_local_time_across_both_changes() -> None:
    schedule = Schedule("report", cron="0 6 * * *", timezone=BERLIN, catch_up="all")
    spring = plan_fires(schedule, utc(2026, 3, 28), utc(2026, 3, 30, 12)).fires
    autumn = plan_fires(schedule, utc(2026, 10, 24), utc(2026, 10, 26, 12)).fires
    assert hhmm(list(spring)) == ["03-28 05:00", "03-29 04:00", "03-30 04:00"]
    assert hhmm(list(autumn)) == ["10-24 04:00", "10-25 05:00", "10-26 05:00"]


# --- every= ------------------------------------------------------------------------------------


def test_every_fires_at_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = Schedule("ping", every=timedelta(seconds=7))
    fires = list(zip(fires_after(schedule, utc(2026, 1, 1)), range(3), strict=False))
    for fire, _ in fires:
        assert (fire - utc(1970, 1, 1)) % timedelta(seconds=7) == timedelta(0)
    # Wherever a process starts, it finds the same instants.
    late = fires_after(schedule, fires[0][0] + timedelta(microseconds=1))
    assert next(late) == fires[1][0]


def test_a_fire_exactly_at_now_is_due_and_not_twice() -> None:
    schedule = Schedule("ping", every=timedelta(seconds=5))
    first = plan_fires(schedule, utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 5), grace=60)
    assert first.fires == (utc(2026, 1, 1, 0, 0, 5),)
    assert first.next_fire == utc(2026, 1, 1, 0, 0, 10)
    again = plan_fires(schedule, utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 9), grace=60)
    assert again.fires == ()


# --- catch-up after downtime -------------------------------------------------------------------

DOWN_FROM = utc(2026, 5, 1, 0, 0, 30)
BACK_AT = utc(2026, 5, 1, 0, 30, 10)  # 30 minutes of every-minute fires missed


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        ("latest", [utc(2026, 5, 1, 0, 30)]),
        ("skip", []),
        ("all", [utc(2026, 5, 1, 0, m) for m in range(1, 31)]),
    ],
)
def test_catch_up_policies(catch_up: Any, expected: list[datetime]) -> None:
    schedule = Schedule("sync", cron="* * * * *", catch_up=catch_up)
    plan = plan_fires(schedule, DOWN_FROM, BACK_AT)
    assert list(plan.fires) == expected
    assert plan.dropped == (catch_up != "all")
    assert plan.next_fire == utc(2026, 5, 1, 0, 31)


def test_all_is_bounded_and_keeps_the_latest_fires() -> None:
    schedule = Schedule("sync", every=timedelta(seconds=1), catch_up="all")
    plan = plan_fires(schedule, utc(2026, 1, 1), utc(2026, 1, 2))
    assert len(plan.fires) == MAX_CATCH_UP
    assert plan.fires[-1] == utc(2026, 1, 2)
    assert plan.dropped


def test_a_year_of_downtime_costs_no_more_than_a_minute() -> None:
    schedule = Schedule("sync", cron="* * * * *", catch_up="all")
    plan = plan_fires(schedule, utc(2025, 1, 1), utc(2026, 1, 1, 0, 0, 30))
    assert plan.fires[0] == utc(2025, 12, 31, 22, 21)
    assert len(plan.fires) == MAX_CATCH_UP


def test_on_time_fires_are_kept_whatever_the_policy() -> None:
    schedule = Schedule("ping", every=timedelta(seconds=1), catch_up="skip")
    plan = plan_fires(schedule, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 30), grace=3.5)
    assert plan.fires == tuple(utc(2026, 1, 1, 0, 0, s) for s in (27, 28, 29, 30))
    assert plan.dropped


# --- the declaration ---------------------------------------------------------------------------


def test_names_tokens_and_fire_times() -> None:
    daily = Schedule("report.daily", cron="0 6 * * *", timezone=BERLIN, payload=b"x")
    ping = Schedule("ping", every=timedelta(seconds=5))
    assert daily.name == "report.daily cron 0 6 * * * Europe/Berlin"
    assert ping.name == "ping every 5s"
    assert Schedule("ping", every=timedelta(seconds=5), name="p").name == "p"
    fire = utc(2026, 3, 29, 4)
    assert (
        token(daily, fire)
        == "asynqpg-schedule:report.daily cron 0 6 * * * Europe/Berlin@2026-03-29T04:00:00Z"
    )
    info = TaskInfo(1, "report.daily", b"x", token(daily, fire), 3, 0, fire, None, ())
    assert Schedule.fire_time(info) == fire
    info.idempotency_token = "user-token"
    assert Schedule.fire_time(info) is None


def test_nicknames_are_what_they_stand_for() -> None:
    plan = plan_fires(Schedule("d", cron="@daily"), utc(2026, 1, 1, 12), utc(2026, 1, 2, 12))
    assert plan.fires == (utc(2026, 1, 2),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": timedelta(seconds=1)}, "exactly one of"),
        ({"cron": "61 * * * *"}, "cron '61 \\* \\* \\* \\*' is invalid: Bad minute"),
        ({"cron": "0 0 * * * *"}, "must have five fields"),
        ({"cron": "0 0 30 2 *"}, "is invalid"),
        ({"cron": 5}, "cron must be a str"),
        ({"every": 5}, "every must be a timedelta"),
        ({"every": timedelta(milliseconds=1500)}, "whole number of seconds"),
        ({"every": timedelta(0)}, "whole number of seconds >= 1"),
        ({"every": timedelta(seconds=5), "timezone": BERLIN}, "timezone applies to cron="),
        ({"cron": "@daily", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"cron": "@daily", "timezone": "../etc"}, "unknown timezone"),
        ({"cron": "@daily", "catch_up": "burst"}, "catch_up must be one of latest, skip, all"),
        ({"cron": "@daily", "max_retry": -1}, "max_retry must be None or an int"),
        ({"cron": "@daily", "max_retry": True}, "max_retry must be None or an int"),
        ({"cron": "@daily", "payload": "text"}, "payload must be bytes, got str"),
        ({"cron": "@daily", "name": "x" * 201}, "name must be 1 to 200 characters"),
        ({"cron": "@daily", "name": "a\x00b"}, "without NUL"),
        ({"cron": "@daily", "queue": ""}, "queue must be 1 to 128 characters"),
        ({"cron": "@daily", "priority": 9}, "priority must be between -5"),
    ],
)
def test_bad_input_says_what_was_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Schedule("report", **kwargs)


def test_bad_type() -> None:
    with pytest.raises(ConfigurationError, match="type must not be empty"):
        Schedule("", cron="@daily")


def test_schedule_is_frozen() -> None:
    schedule = Schedule("report", cron="@daily")
    with pytest.raises(AttributeError):
        schedule.cron = "@hourly"  # type: ignore[misc]


def test_a_consumers_schedule_names_are_unique() -> None:
    a = Schedule("report", cron="@daily")
    assert check_schedules([a, Schedule("report", cron="@hourly")]) == (
        a,
        Schedule("report", cron="@hourly"),
    )
    with pytest.raises(ConfigurationError, match="two schedules are named 'report cron @daily'"):
        check_schedules([a, Schedule("report", cron="@daily", payload=b"other")])
    with pytest.raises(ConfigurationError, match="list of Schedule"):
        check_schedules("report")
    with pytest.raises(ConfigurationError, match="hold Schedule values"):
        check_schedules([a, "b"])
