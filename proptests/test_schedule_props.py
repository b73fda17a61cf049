"""Properties of the schedule's fire times (`_core._schedule`): a pure function of the clock.

* fires are strictly increasing, later than the start, and the same whichever earlier point
  the enumeration starts from (every process agrees on them);
* a plan enqueues only fires of (after, now], every on-time one, and never more missed ones
  than the catch-up policy allows (the latest of them);
* a running scheduler that wakes at arbitrary moments, each within the grace of the previous
  one, enqueues every fire exactly once: the same fires as one plan over the whole span.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio import Schedule
from asynqpg_trio._core._schedule import MAX_CATCH_UP, fires_after, plan_fires

#: Expressions that exercise DST (fixed hours inside the changes, wildcard minutes and hours),
#: nicknames, day-of-week and day-of-month rules.
CRONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0,30 2,3 * * *",
    "*/15 2 * * *",
    "15 1-3 * * 0",
    "0 6 * * *",
    "59 23 L * *",
    "0 12 * * MON-FRI",
    "@daily",
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
POLICIES = ["latest", "skip", "all"]
KEPT = {"latest": 1, "skip": 0, "all": MAX_CATCH_UP}

crons = st.builds(
    lambda cron, zone, catch_up: Schedule("t", cron=cron, timezone=zone, catch_up=catch_up),
    st.sampled_from(CRONS),
    st.sampled_from(ZONES),
    st.sampled_from(POLICIES),
)
everies = st.builds(
    lambda seconds, catch_up: Schedule("t", every=timedelta(seconds=seconds), catch_up=catch_up),
    st.sampled_from([1, 5, 7, 60, 3600, 86400]),
    st.sampled_from(POLICIES),
)
schedules = st.one_of(crons, everies)
#: Moments of the 2026 DST changes of the zones above (UTC).
DST_CHANGES = [
    datetime(2026, 3, 8, 7),
    datetime(2026, 3, 29, 1),
    datetime(2026, 4, 4, 15),
    datetime(2026, 10, 3, 15),
    datetime(2026, 10, 25, 1),
    datetime(2026, 11, 1, 6),
]
near_a_change = st.sampled_from(DST_CHANGES).flatmap(
    lambda d: st.datetimes(min_value=d - timedelta(hours=4), max_value=d + timedelta(hours=4))
)
anywhere = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31))
instants = st.one_of(anywhere, near_a_change).map(lambda d: d.replace(tzinfo=UTC))


def span_for(schedule: Schedule) -> timedelta:
    """A span holding at most a few thousand fires (so the reference enumeration stays fast)."""
    return (schedule.every or timedelta(minutes=1)) * 2000


def every_fire(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """The reference: every fire of (after, until], enumerated one by one."""
    return list(itertools.takewhile(lambda f: f <= until, fires_after(schedule, after)))


@given(schedules, instants)
def test_fires_are_strictly_increasing_and_later(schedule: Schedule, after: datetime) -> None:
    fires = list(itertools.islice(fires_after(schedule, after), 30))
    assert fires, "every schedule here fires"
    assert fires[0] > after
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert all(f.tzinfo is UTC and f.microsecond == 0 for f in fires)


@given(schedules, instants, st.floats(0, 1))
def test_fires_are_the_same_from_any_earlier_start(
    schedule: Schedule, later: datetime, fraction: float
) -> None:
    earlier = later - span_for(schedule) * fraction / 20
    from_earlier = every_fire(schedule, earlier, later + span_for(schedule) / 20)
    from_later = every_fire(schedule, later, later + span_for(schedule) / 20)
    assert [f for f in from_earlier if f > later] == from_later


@given(schedules, instants, st.floats(0, 1), st.floats(0, 1))
def test_a_plan_keeps_on_time_fires_and_what_the_policy_allows(
    schedule: Schedule, after: datetime, length: float, grace_share: float
) -> None:
    now = after + span_for(schedule) * length
    grace = (now - after).total_seconds() * grace_share
    plan = plan_fires(schedule, after, now, grace=grace)
    due = every_fire(schedule, after, now)
    fires = list(plan.fires)
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert set(fires) <= set(due)
    boundary = now - timedelta(seconds=grace)
    on_time = [f for f in due if f > boundary]
    missed = [f for f in due if f <= boundary]
    assert [f for f in fires if f > boundary] == on_time
    kept = [f for f in fires if f <= boundary]
    assert len(kept) <= KEPT[schedule.catch_up]
    assert kept == missed[len(missed) - len(kept) :]  # the latest missed ones
    assert len(kept) == min(len(missed), KEPT[schedule.catch_up])
    assert plan.dropped == (len(kept) < len(missed))
    assert plan.next_fire == next(fires_after(schedule, now))


@given(schedules, instants, st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_wake_ups_within_the_grace_enqueue_each_fire_once(
    schedule: Schedule, start: datetime, steps: list[float]
) -> None:
    grace = 120.0
    enqueued: list[datetime] = []
    cursor = start
    for step in steps:
        now = cursor + timedelta(seconds=grace * step)
        enqueued += plan_fires(schedule, cursor, now, grace=grace).fires
        cursor = now
    assert enqueued == every_fire(schedule, start, cursor)


@given(schedules, instants, st.floats(0, 1))
def test_a_plan_is_a_pure_function_of_its_arguments(
    schedule: Schedule, after: datetime, length: float
) -> None:
    now = after + span_for(schedule) * length
    assert plan_fires(schedule, after, now) == plan_fires(schedule, after, now)
