"""When a periodic task fires: fire times as a pure function of (schedule, cursor, now).

Theory of operation
-------------------
A schedule's fires are one fixed set of instants (UTC datetimes), the same in every process:

* ``every=``: the multiples of the interval since the Unix epoch (00:00:00 UTC), so that
  processes started at different times agree on them;
* ``cron=``: the matches of the expression in the schedule's zone, as cronsim (which follows
  Debian's cron) enumerates them.  A fixed minute and hour (``30 2 * * *``) fires once at
  02:30 on the day the clocks go back (the first pass), and at 03:00, right after the jump,
  on the day they go forward.  A minute or hour field starting with ``*`` runs on elapsed
  time, like Debian cron's "wildcard" jobs: nothing inside the skipped hour, and both passes
  of the repeated one (two instants an hour apart: ``0 * * * *`` stays hourly).

`plan_fires` splits the fires of (cursor, now] in two.  Those less than ``grace`` seconds old
are *on time* and always enqueued (a running scheduler passes a grace, so a late wake-up
loses nothing); older ones are *missed* (nobody was running at their time) and the schedule's
catch-up policy keeps the latest one (``"latest"``), none (``"skip"``) or the latest
`MAX_CATCH_UP` (``"all"``).  Long gaps cost no more than short ones: missed cron fires are
found by iterating backwards from the end of the gap.

Pure: no clock is read (``now`` is an argument), no I/O but zoneinfo's cached zone files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from ._errors import ConfigurationError
from ._schedule_spec import Schedule, cron_of, zone_of

__all__ = [
    "MAX_CATCH_UP",
    "Plan",
    "check_schedules",
    "fires_after",
    "plan_fires",
]

#: The most missed fires ``catch_up="all"`` enqueues after downtime (the latest ones).
MAX_CATCH_UP = Schedule.MAX_CATCH_UP
#: How many missed fires each policy keeps.
_KEPT = {"latest": 1, "skip": 0, "all": MAX_CATCH_UP}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do about a schedule at ``now``.

    Attributes:
        fires: the fires to enqueue now, oldest first.
        dropped: some missed fires were left out by the catch-up policy.
        next_fire: the first fire after ``now`` (None: the expression never matches again).
    """

    fires: tuple[datetime, ...]
    dropped: bool
    next_fire: datetime | None


def check_schedules(schedules: object) -> tuple[Schedule, ...]:
    """A consumer's ``schedules=``: a sequence of `Schedule` with distinct names.

    Raises:
        ConfigurationError: not such a sequence, or two schedules share a name.
    """
    if isinstance(schedules, str | bytes) or not isinstance(schedules, Sequence):
        raise ConfigurationError(f"schedules must be a list of Schedule, got {schedules!r}")
    seen: set[str] = set()
    for schedule in schedules:
        if not isinstance(schedule, Schedule):
            raise ConfigurationError(f"schedules must hold Schedule values, got {schedule!r}")
        if schedule.name in seen:
            raise ConfigurationError(
                f"two schedules are named {schedule.name!r}: give each a distinct name="
            )
        seen.add(schedule.name)
    return tuple(schedules)


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment!r}")
    return moment


def fires_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Every fire strictly after ``after``, in order, as UTC datetimes (cron: for as long as
    the expression matches within 50 years of the previous fire)."""
    after = _aware(after, "after")
    if schedule.every is not None:
        step = schedule.every
        k = (after - _EPOCH) // step + 1
        return (_EPOCH + n * step for n in itertools.count(k))
    return _cron_after(schedule, after)


def _cron_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    assert schedule.cron is not None
    for local in CronSim(cron_of(schedule), after.astimezone(zone_of(schedule))):
        fire = local.astimezone(UTC)
        # The first pass of a repeated hour, when ``after`` lies in the second one: passed.
        if fire > after:
            yield fire


def _cron_before(schedule: Schedule, until: datetime) -> Iterator[datetime]:
    """Cron fires at or before ``until``, newest first (used only as a lower bound: around a
    DST change cronsim's reverse iteration may leave out a fire the forward one has)."""
    assert schedule.cron is not None
    start = until.replace(microsecond=0) + _SECOND  # its first step lands on ``until``
    for local in CronSim(cron_of(schedule), start.astimezone(zone_of(schedule)), reverse=True):
        fire = local.astimezone(UTC)
        if fire <= until:
            yield fire


def _between(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """The fires in (after, until], in order."""
    if until <= after:
        return []
    return list(itertools.takewhile(lambda f: f <= until, fires_after(schedule, after)))


def _last(schedule: Schedule, after: datetime, until: datetime, n: int) -> list[datetime]:
    """The last ``n`` fires in (after, until], in order, without enumerating the gap."""
    if n <= 0 or until <= after:
        return []
    if schedule.every is not None:
        last = (until - _EPOCH) // schedule.every
        fires = (_EPOCH + k * schedule.every for k in range(last - n + 1, last + 1))
        return [f for f in fires if f > after]
    newest = list(itertools.islice(_cron_before(schedule, until), n))
    start = after if len(newest) < n else max(after, newest[-1] - _SECOND)
    return _between(schedule, start, until)[-n:]


def plan_fires(schedule: Schedule, after: datetime, now: datetime, *, grace: float = 0.0) -> Plan:
    """The fires in (after, now] to enqueue, and the next fire after ``now``.

    A fire less than ``grace`` seconds before ``now`` is on time and always enqueued; older
    ones are missed, and ``schedule.catch_up`` says which of them are enqueued: the latest
    (``"latest"``), none (``"skip"``) or the latest `MAX_CATCH_UP` (``"all"``).

    Raises:
        ValueError: ``after`` or ``now`` is naive, or ``grace`` is negative.
    """
    after, now = _aware(after, "after"), _aware(now, "now")
    if grace < 0:
        raise ValueError(f"grace must be >= 0, got {grace}")
    boundary = min(now, max(after, now - timedelta(seconds=grace)))
    missed = _last(schedule, after, boundary, _KEPT[schedule.catch_up])
    on_time = _between(schedule, boundary, now)
    dropped = False
    if boundary > after:  # some fires may have been missed
        first = next(fires_after(schedule, after), None)
        dropped = first is not None and first <= boundary and (not missed or first < missed[0])
    return Plan(tuple(missed + on_time), dropped, next(fires_after(schedule, now), None))
