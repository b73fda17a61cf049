"""The modelled task row, and what each guard reads and each effect writes in it."""

# Theory of operation
# -------------------
# This is the column-level vocabulary the transition table in _state.py is written in.
# A Cond is a predicate over (row, params); an Effect is a pure function from (row,
# params) to a new row. Each member's value documents it in SQL terms, so the table and
# the SQL can be read side by side. Nothing here knows which status a rule moves to:
# _state.py decides that. Effects never validate counters; the table's guards and
# the invariants checked by the property tests keep them non-negative.
# Times are floats (seconds on the database clock) passed in by the caller.

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable


#: How many error messages a row keeps; appending to a full history drops the oldest.
MESSAGES_KEPT: Final = 100


class TaskStatus(enum.StrEnum):
    """Where a task is in its life; the value stored in ``asynqpg_tasks.status``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finalized(self) -> bool:
        """Whether the status is terminal: completed, failed or cancelled."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """The parts of a task row the state machine reads and writes.

    Attributes:
        status: Current status.
        attempts_left: Executions still allowed; a claim consumes one.
        attempts_elapsed: Executions started (claims), minus refunds.
        n_messages: Length of the ``messages`` array (error history, at most
            `MESSAGES_KEPT`).
        finalized_at: When the task reached a terminal status, else ``None``.
        blocked_till: Not claimable before this time; while running, the lease expiry.
        lease_token: Token of the current lease; set exactly while running.
    """

    status: TaskStatus
    attempts_left: int
    attempts_elapsed: int
    n_messages: int
    finalized_at: float | None
    blocked_till: float
    lease_token: int | None


@dataclass(frozen=True, slots=True)
class TransitionParams:
    """Inputs of one transition, supplied by the caller (times in seconds).

    Attributes:
        now: The database clock's current time.
        delay: Delay for enqueue, retry, snooze, snooze_with_error and rescue.
        token: The caller's lease token; fences the fenced events.
        new_token: The fresh lease token for claim and lease_takeover.
        lease: Lease duration for claim, lease_takeover and extend_lease.
        retention: How long clean keeps finalized tasks.
        max_retry: Total executions allowed, for enqueue (Go meaning; 0 acts as 1).
    """

    now: float
    delay: float = 0.0
    token: int | None = None
    new_token: int | None = None
    lease: float = 0.0
    retention: float = 0.0
    max_retry: int = 1


class Cond(enum.Enum):
    """A guard condition of a transition rule."""

    DUE = "blocked_till <= now"
    LEASE_EXPIRED = "blocked_till <= now (the lease has expired)"
    TOKEN_MATCHES = "lease_token = token"
    HAS_ATTEMPTS = "attempts_left >= 1"
    NO_ATTEMPTS = "attempts_left < 1"
    LEASED = "lease_token IS NOT NULL (our claim: it charged its attempt)"
    UNLEASED = "lease_token IS NULL (a Go consumer's claim: its attempt is not charged yet)"
    UNLEASED_AS_READ = "lease_token IS NULL and token IS NULL (read so by the janitor)"
    HAS_SPARE_ATTEMPT = "attempts_left >= 2 (one for the uncharged attempt, one more)"
    NO_SPARE_ATTEMPT = "attempts_left < 2"
    RETENTION_PASSED = "finalized_at < now - retention"


class Effect(enum.Enum):
    """A column change made by a transition rule."""

    CREATE = "attempts_left = max(max_retry, 1), blocked_till = now + delay"
    CONSUME_ATTEMPT = "attempts_left -= 1, attempts_elapsed += 1"
    CHARGE_ATTEMPT = "attempts_left = max(attempts_left - 1, 0), attempts_elapsed += 1"
    REFUND_ATTEMPT = "attempts_left += 1, attempts_elapsed -= 1"
    ENSURE_ATTEMPT = "attempts_left = max(attempts_left, 1)"
    TAKE_LEASE = "lease_token = new_token, blocked_till = now + lease"
    RENEW_LEASE = "blocked_till = now + lease"
    CLEAR_LEASE = "lease_token = NULL"
    DELAY = "blocked_till = now + delay"
    UNBLOCK = "blocked_till = now"
    MESSAGE = "messages = messages || message, the last 100 kept"
    FINALIZE = "finalized_at = now"
    FINALIZE_ONCE = "finalized_at = coalesce(finalized_at, now)"
    UNFINALIZE = "finalized_at = NULL"


def _new_token(p: TransitionParams) -> int:
    if p.new_token is None:
        raise ValueError("claim and lease_takeover need TransitionParams.new_token")
    return p.new_token


_CHECKS: Final[dict[Cond, Callable[[TaskRow, TransitionParams], bool]]] = {
    Cond.DUE: lambda r, p: r.blocked_till <= p.now,
    Cond.LEASE_EXPIRED: lambda r, p: r.blocked_till <= p.now,
    Cond.TOKEN_MATCHES: lambda r, p: r.lease_token is not None and r.lease_token == p.token,
    Cond.HAS_ATTEMPTS: lambda r, p: r.attempts_left >= 1,
    Cond.NO_ATTEMPTS: lambda r, p: r.attempts_left < 1,
    Cond.LEASED: lambda r, p: r.lease_token is not None,
    Cond.UNLEASED: lambda r, p: r.lease_token is None,
    Cond.UNLEASED_AS_READ: lambda r, p: r.lease_token is None and p.token is None,
    Cond.HAS_SPARE_ATTEMPT: lambda r, p: r.attempts_left >= 2,
    Cond.NO_SPARE_ATTEMPT: lambda r, p: r.attempts_left < 2,
    Cond.RETENTION_PASSED: lambda r, p: (
        r.finalized_at is not None and r.finalized_at < p.now - p.retention
    ),
}

_CHANGES: Final[dict[Effect, Callable[[TaskRow, TransitionParams], TaskRow]]] = {
    Effect.CREATE: lambda r, p: replace(
        r, attempts_left=max(p.max_retry, 1), blocked_till=p.now + p.delay
    ),
    Effect.CONSUME_ATTEMPT: lambda r, p: replace(
        r, attempts_left=r.attempts_left - 1, attempts_elapsed=r.attempts_elapsed + 1
    ),
    Effect.CHARGE_ATTEMPT: lambda r, p: replace(
        r, attempts_left=max(r.attempts_left - 1, 0), attempts_elapsed=r.attempts_elapsed + 1
    ),
    Effect.REFUND_ATTEMPT: lambda r, p: replace(
        r, attempts_left=r.attempts_left + 1, attempts_elapsed=r.attempts_elapsed - 1
    ),
    Effect.ENSURE_ATTEMPT: lambda r, p: replace(r, attempts_left=max(r.attempts_left, 1)),
    Effect.TAKE_LEASE: lambda r, p: replace(
        r, lease_token=_new_token(p), blocked_till=p.now + p.lease
    ),
    Effect.RENEW_LEASE: lambda r, p: replace(r, blocked_till=p.now + p.lease),
    Effect.CLEAR_LEASE: lambda r, p: replace(r, lease_token=None),
    Effect.DELAY: lambda r, p: replace(r, blocked_till=p.now + p.delay),
    Effect.UNBLOCK: lambda r, p: replace(r, blocked_till=p.now),
    Effect.MESSAGE: lambda r, p: replace(r, n_messages=min(r.n_messages + 1, MESSAGES_KEPT)),
    Effect.FINALIZE: lambda r, p: replace(r, finalized_at=p.now),
    Effect.FINALIZE_ONCE: lambda r, p: replace(
        r, finalized_at=p.now if r.finalized_at is None else r.finalized_at
    ),
    Effect.UNFINALIZE: lambda r, p: replace(r, finalized_at=None),
}


def holds(cond: Cond, row: TaskRow, params: TransitionParams) -> bool:
    """Evaluate the guard condition ``cond`` on ``row``."""
    return _CHECKS[cond](row, params)


def change(effect: Effect, row: TaskRow, params: TransitionParams) -> TaskRow:
    """Return ``row`` with ``effect`` applied (the status is left alone).

    Raises:
        ValueError: ``TAKE_LEASE`` without ``params.new_token``.
    """
    return _CHANGES[effect](row, params)
