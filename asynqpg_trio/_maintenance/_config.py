"""Maintenance settings (`MaintenanceConfig`, validated once) and live counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .._core._checks import count, seconds
from .._core._errors import ConfigurationError

__all__ = ["MaintenanceConfig", "MaintenanceStats"]

_DAY = 86400.0


@dataclass(frozen=True, slots=True, init=False)
class MaintenanceConfig:
    """How the consumers of one queue elect a leader and how the leader maintains the table.

    Durations are given as seconds (int or float) or `datetime.timedelta` and stored as float
    seconds.  All arguments are keyword-only.

    Attributes:
        group: leadership group; consumers sharing a table and a group elect one leader.
        ttl: seconds a leadership lease lasts on the database clock (default 15).  A leader
            stops its maintenance ``0.8 * ttl`` after the last renewal it sent that
            succeeded, so it never overlaps a successor; a dead leader is replaced within
            about ``ttl + renew_interval``.
        renew_interval: seconds between elections / renewals (default 5; below ``ttl / 2``).
        janitor_interval: seconds between rescues of expired leases (default 5).
        janitor_batch: rows per rescue transaction (default 1000).
        cleaner_interval: seconds between cleanups (default 30).
        cleaner_batch: rows per cleanup statement (default 1000).
        max_batches_per_run: batches per rescue run, and per status per cleanup run, before
            waiting for the next interval (default 10).
        completed_retention: how long completed tasks are kept (default 24 hours).
        failed_retention: how long failed tasks are kept (default 7 days).
        cancelled_retention: how long cancelled tasks are kept (default 24 hours).
        resign_grace: the most seconds resigning may take at shutdown (default 5).

    Raises:
        ConfigurationError: a value is out of range (the message names it).
    """

    group: str
    ttl: float
    renew_interval: float
    janitor_interval: float
    janitor_batch: int
    cleaner_interval: float
    cleaner_batch: int
    max_batches_per_run: int
    completed_retention: float
    failed_retention: float
    cancelled_retention: float
    resign_grace: float

    def __init__(
        self,
        *,
        group: str = "default",
        ttl: float | timedelta = 15.0,
        renew_interval: float | timedelta = 5.0,
        janitor_interval: float | timedelta = 5.0,
        janitor_batch: int = 1000,
        cleaner_interval: float | timedelta = 30.0,
        cleaner_batch: int = 1000,
        max_batches_per_run: int = 10,
        completed_retention: float | timedelta = _DAY,
        failed_retention: float | timedelta = 7 * _DAY,
        cancelled_retention: float | timedelta = _DAY,
        resign_grace: float | timedelta = 5.0,
    ) -> None:
        if not isinstance(group, str) or not group:
            raise ConfigurationError(f"group must be a non-empty string, got {group!r}")
        ttl_s = seconds(ttl, "ttl")
        renew_s = seconds(renew_interval, "renew_interval")
        if not renew_s < ttl_s / 2:
            raise ConfigurationError(
                f"renew_interval ({renew_s:g} s) must be less than half the ttl ({ttl_s:g} s), "
                "so that one missed renewal does not cost the leadership"
            )
        values: dict[str, object] = {
            "group": group,
            "ttl": ttl_s,
            "renew_interval": renew_s,
            "janitor_interval": seconds(janitor_interval, "janitor_interval"),
            "janitor_batch": count(janitor_batch, "janitor_batch"),
            "cleaner_interval": seconds(cleaner_interval, "cleaner_interval"),
            "cleaner_batch": count(cleaner_batch, "cleaner_batch"),
            "max_batches_per_run": count(max_batches_per_run, "max_batches_per_run"),
            "completed_retention": seconds(
                completed_retention, "completed_retention", allow_zero=True
            ),
            "failed_retention": seconds(failed_retention, "failed_retention", allow_zero=True),
            "cancelled_retention": seconds(
                cancelled_retention, "cancelled_retention", allow_zero=True
            ),
            "resign_grace": seconds(resign_grace, "resign_grace"),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclass(slots=True)
class MaintenanceStats:
    """Live counters of one `run_maintenance`, updated in place (read them, don't write).

    Attributes:
        is_leader: whether this instance's maintenance is running now.
        elections_won: times this instance became the leader.
        leadership_lost: terms that ended other than by shutdown (renewal failed or came
            back not-ours, or the local lease deadline passed).
        errors: transient database errors logged (elections, LISTEN, janitor, cleaner).
        janitor_runs: rescue runs completed.
        rescued: tasks put back to pending by the janitor.
        rescue_failed: tasks failed by the janitor because no attempt was left.
        cleaner_runs: cleanup runs completed.
        cleaned: finalized tasks deleted by the cleaner.
    """

    is_leader: bool = False
    elections_won: int = 0
    leadership_lost: int = 0
    errors: int = 0
    janitor_runs: int = 0
    rescued: int = 0
    rescue_failed: int = 0
    cleaner_runs: int = 0
    cleaned: int = 0
