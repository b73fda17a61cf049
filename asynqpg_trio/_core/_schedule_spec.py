"""`Schedule`: a periodic task declared in code, validated when it is made (pure core).

A schedule names a task type, when it fires (``cron=`` in a time zone, or ``every=``), what
its tasks carry, and what happens to fires missed while no consumer ran (``catch_up``).  When
it fires is decided in `_schedule`; this module only checks and normalises the declaration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._checks import storable
from ._errors import ConfigurationError, InvalidTask
from ._task import (
    DEFAULT_QUEUE,
    MAX_ATTEMPTS,
    TaskInfo,
    check_priority,
    check_queue,
    check_type,
)

__all__ = [
    "CATCH_UP_POLICIES",
    "MAX_NAME_LENGTH",
    "CatchUp",
    "Schedule",
    "cron_of",
    "token",
    "zone_of",
]

#: What to do with fires missed while no consumer ran (see `Schedule`).
CatchUp = Literal["latest", "skip", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "skip", "all")
#: The longest schedule name, in characters.
MAX_NAME_LENGTH = 200
#: Vixie cron's nicknames, as the five fields they stand for.
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_TOKEN_PREFIX = "asynqpg-schedule:"
_TOKEN_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic task: every consumer given it enqueues one task of ``type`` per fire time,
    and the database keeps exactly one per fire however many consumers run it.

    ``Schedule("report.daily", cron="0 6 * * *", timezone="Europe/Berlin")`` fires at 06:00
    Berlin time; ``Schedule("ping", every=timedelta(seconds=5))`` at every multiple of 5 s
    since the Unix epoch (so every process agrees on the instants).  Give exactly one of
    ``cron`` and ``every``.

    Attributes:
        type: the task type to enqueue (1 to 255 characters).
        cron: a five-field cron expression (minute hour day-of-month month day-of-week, as
            in Debian's cron, ``L``, ``W`` and ``#`` included) or a nickname such as
            ``@daily``, read in ``timezone``.
        every: a whole number of seconds (at least one) as a `timedelta`.
        payload: the bytes every task of this schedule carries.
        timezone: an IANA zone name for ``cron`` (default ``"UTC"``); ``every`` takes no zone.
        name: identifies the schedule in the database and in each task's idempotency token,
            across every consumer (default: type, spec and zone, e.g. ``"report.daily cron 0 6
            * * * Europe/Berlin"``); at most 200 characters.  Two consumers declaring the same
            name are running the same schedule.
        catch_up: fires missed while no consumer ran (found at start from the last fire
            stored): ``"latest"`` (default) enqueues the latest of them only, ``"skip"`` none,
            ``"all"`` each of them up to the latest 100 (`Schedule.MAX_CATCH_UP`).
        max_retry: how many times each task may run in all (default: 3, the producer's).
        queue: the queue its tasks go on (default ``"default"``).
        priority: its tasks' priority, -5 to 5 (default 0; larger runs first).

    Raises:
        ConfigurationError: a value is invalid (the message says which and why).
    """

    #: The most missed fires ``catch_up="all"`` enqueues after downtime (the latest ones).
    MAX_CATCH_UP: ClassVar[int] = 100

    type: str
    cron: str | None = field(default=None, kw_only=True)
    every: timedelta | None = field(default=None, kw_only=True)
    payload: bytes = field(default=b"", kw_only=True)
    timezone: str = field(default="UTC", kw_only=True)
    name: str = field(default="", kw_only=True)
    catch_up: CatchUp = field(default="latest", kw_only=True)
    max_retry: int | None = field(default=None, kw_only=True)
    queue: str = field(default=DEFAULT_QUEUE, kw_only=True)
    priority: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        try:
            check_type(self.type)
        except InvalidTask as ex:
            raise ConfigurationError(f"schedule {ex}") from None
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(
                f"schedule of {self.type!r}: give exactly one of cron= and every="
            )
        if not isinstance(self.payload, bytes):
            raise ConfigurationError(
                f"schedule payload must be bytes, got {type(self.payload).__name__}"
            )
        if self.every is not None:
            _check_every(self.every, self.timezone)
        else:
            _check_zone(self.timezone)
            _check_cron(self.cron)
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {self.catch_up!r}"
            )
        retry = self.max_retry
        if retry is not None and (
            isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= MAX_ATTEMPTS
        ):
            raise ConfigurationError(
                f"max_retry must be None or an int between 0 and {MAX_ATTEMPTS}, got {retry!r}"
            )
        try:
            check_queue(self.queue)
            check_priority(self.priority)
        except InvalidTask as ex:
            raise ConfigurationError(f"schedule of {self.type!r}: {ex}") from None
        if self.name == "":
            zone = "" if self.timezone == "UTC" else f" {self.timezone}"
            object.__setattr__(self, "name", f"{self.type} {self.spec}{zone}"[:MAX_NAME_LENGTH])
        _check_name(self.name)

    @property
    def spec(self) -> str:
        """When it fires, as text: ``"cron 0 6 * * *"`` or ``"every 5s"``."""
        if self.every is not None:
            return f"every {self.every // timedelta(seconds=1)}s"
        return f"cron {self.cron}"

    @staticmethod
    def fire_time(task: TaskInfo) -> datetime | None:
        """The fire time (UTC) a task enqueued by a schedule stands for, read from its
        idempotency token (``asynqpg-schedule:NAME@2026-03-29T04:00:00Z``); None for a task
        no schedule enqueued."""
        text = task.idempotency_token
        if text is None or not text.startswith(_TOKEN_PREFIX) or "@" not in text:
            return None
        try:
            return datetime.strptime(text.rpartition("@")[2], _TOKEN_TIME).replace(tzinfo=UTC)
        except ValueError:
            return None


def token(schedule: Schedule, fire: datetime) -> str:
    """The idempotency token of one fire: the same in every process, so the task table's
    unique (type, token) index keeps one task per fire."""
    return f"{_TOKEN_PREFIX}{schedule.name}@{fire.astimezone(UTC).strftime(_TOKEN_TIME)}"


def zone_of(schedule: Schedule) -> tzinfo:
    """The zone a cron schedule is read in (UTC itself for ``"UTC"``)."""
    return UTC if schedule.timezone == "UTC" else ZoneInfo(schedule.timezone)


def cron_of(schedule: Schedule) -> str:
    """The schedule's five cron fields (a nickname replaced by what it stands for)."""
    assert schedule.cron is not None
    text = schedule.cron.strip()
    return _NICKNAMES.get(text.lower(), text)


def _check_every(every: object, timezone: object) -> None:
    if not isinstance(every, timedelta):
        raise ConfigurationError(f"every must be a timedelta, got {every!r}")
    if every < timedelta(seconds=1) or every % timedelta(seconds=1):
        raise ConfigurationError(f"every must be a whole number of seconds >= 1, got {every!r}")
    if timezone != "UTC":
        raise ConfigurationError(
            "timezone applies to cron= schedules only: every= fires at multiples of the "
            f"interval since the Unix epoch, whatever the zone (got timezone={timezone!r})"
        )


def _check_zone(timezone: object) -> None:
    if not isinstance(timezone, str) or not timezone:
        raise ConfigurationError(f"timezone must be an IANA zone name, got {timezone!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown timezone {timezone!r}: expected an IANA name such as 'Europe/Berlin'"
        ) from None


def _check_cron(cron: object) -> None:
    if not isinstance(cron, str):
        raise ConfigurationError(f"cron must be a str, got {cron!r}")
    text = _NICKNAMES.get(cron.strip().lower(), cron.strip())
    if len(text.split()) != 5:
        raise ConfigurationError(
            f"cron {cron!r} must have five fields (minute hour day-of-month month "
            "day-of-week); for seconds use every="
        )
    try:
        next(CronSim(text, datetime(2000, 1, 1)))
    except CronSimError as ex:
        raise ConfigurationError(f"cron {cron!r} is invalid: {ex}") from None
    except StopIteration:
        raise ConfigurationError(f"cron {cron!r} never fires") from None


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"schedule name must be 1 to {MAX_NAME_LENGTH} characters, got {name!r}"
        )
    if not storable(name):
        raise ConfigurationError(
            f"schedule name must be text without NUL or lone surrogates, got {name!r}"
        )
