"""Rescue planning (pure core): what becomes of a task whose consumer stopped renewing.

Theory of operation
-------------------
design.md, event ``rescue``: a ``running`` task whose lease expired goes back to ``pending``
after the retry policy's back-off when it has an attempt left, else it fails; either way a
message says whose lease expired and which janitor acted.  Our claim consumed the attempt, so
the counters do not change; a Go consumer's claim (a row without a lease token) consumed none,
so that dead attempt is charged first (`charged`), and it decides with what is left after it.
`plan_rescue` makes that decision for a batch without I/O, clock
or randomness of its own (a policy with jitter brings its own); the janitor (`_janitor`) reads
the rows, calls it, and writes the plan under SQL fences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._retry import RetryPolicy

__all__ = [
    "MAX_RESCUE_DELAY",
    "ExpiredLease",
    "RescueBatch",
    "RescuePlan",
    "charged",
    "plan_rescue",
]

#: The longest back-off a rescue applies, whatever the policy says (one year).
MAX_RESCUE_DELAY = 366 * 86400.0


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A locked ``running`` task whose lease has expired, as ``select_expired`` returns it."""

    id: int
    lease_token: int | None
    lease_owner: str | None
    attempts_left: int
    attempts_elapsed: int


@dataclass(frozen=True, slots=True)
class RescuePlan:
    """What to write for a batch: parallel tuples, one entry per task."""

    ids: tuple[int, ...]
    tokens: tuple[int | None, ...]
    statuses: tuple[str, ...]
    delays: tuple[float, ...]
    messages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RescueBatch:
    """What one rescue batch found and did (the maintenance repository's ``rescue_batch``).

    Attributes:
        locked: expired leases the batch locked (fewer than asked: the backlog is worked off).
        rescued: tasks put back to pending (a retry is due after the back-off).
        failed: tasks failed because no attempt was left.
    """

    locked: int
    rescued: int
    failed: int


def charged(row: ExpiredLease) -> tuple[int, int]:
    """(attempts left, number of the dead attempt) once the dead attempt is charged.

    Our claims charge their attempt up front; a row without a lease token was claimed by a Go
    consumer, which charges none, so its dead attempt is charged at the rescue (the same
    effect as the state table's CHARGE_ATTEMPT).
    """
    if row.lease_token is None:
        return max(row.attempts_left - 1, 0), row.attempts_elapsed + 1
    return row.attempts_left, row.attempts_elapsed


def plan_rescue(rows: Sequence[ExpiredLease], *, janitor: str, policy: RetryPolicy) -> RescuePlan:
    """Decide the fate of expired-lease tasks (pure: no I/O, no clock).

    A task with an attempt left (after `charged`) goes back to pending after
    ``policy.next_retry(n)`` seconds, n being the number of the attempt whose consumer
    vanished (at least 1); the delay is clamped to ``[0, MAX_RESCUE_DELAY]``.  Otherwise it
    fails.
    """
    statuses: list[str] = []
    delays: list[float] = []
    messages: list[str] = []
    for row in rows:
        owner = row.lease_owner or "(unknown)"
        why = f"lease expired (consumer {owner} stopped renewing)"
        attempts_left, attempt = charged(row)
        if attempts_left >= 1:
            delay = float(policy.next_retry(max(attempt, 1)))
            delay = min(delay, MAX_RESCUE_DELAY) if delay >= 0 else 0.0  # NaN -> 0
            statuses.append("pending")
            delays.append(delay)
            messages.append(f"{why}; rescued by janitor {janitor}, retry in {delay:.1f} s")
        else:
            statuses.append("failed")
            delays.append(0.0)
            messages.append(f"{why} and no attempt is left; failed by janitor {janitor}")
    return RescuePlan(
        ids=tuple(row.id for row in rows),
        tokens=tuple(row.lease_token for row in rows),
        statuses=tuple(statuses),
        delays=tuple(delays),
        messages=tuple(messages),
    )
