"""The task state machine: one transition table and the applier that enforces it."""

# Theory of operation
# -------------------
# TRANSITIONS below is the single source of truth for how a row of asynqpg_tasks may
# change. Each Rule says: on `event`, from one of `sources` (None = no row), when every
# condition in `guard` holds, go to `target` (None = row deleted) and apply `effects` in
# order. An event with two outcomes (lease_takeover, retry, snooze_with_error, rescue)
# has one rule per branch, with mutually exclusive guards; at most one rule matches.
#
# apply() decides; it does no I/O. The SQL in the data layer implements the same rules
# and the property tests check that the table keeps its invariants:
#   * attempts_left + attempts_elapsed is constant except on manual_retry ("the claim
#     consumes the attempt"; snooze and release refund it);
#   * status is running  <=> lease_token is set;
#   * status is finalized <=> finalized_at is set;
#   * a pending row has attempts_left >= 1, so counters never go negative.
# A running row without a lease token was claimed by a Go consumer, whose claim consumes no
# attempt: taking it over (lease_takeover) or rescuing it (rescue) first charges that dead
# attempt (CHARGE_ATTEMPT, with the "lease expired" message), as our own claims charge theirs
# up front; the takeover then needs a spare attempt for its own run.  Such a row is the one
# exception to "running <=> lease_token is set", and no rule produces one.
# Fenced events (those whose rules require TOKEN_MATCHES) come from a lease holder. If
# no rule matches (stale token, row no longer running, lease not expired) they are
# no-ops, because their UPDATE ... WHERE lease_token = $token matches nothing. Any other
# event with no matching rule raises IllegalTransition.
# Times are floats (seconds on the database clock) passed in by the caller.
# Idempotency tokens and unique keys (_unique.py) constrain rows across the table, not one
# row, so they are not rules here: the database's unique indexes refuse a second holder.
# Rules moving a row between pending and running, or out of its unique states, never meet
# them (a Unique's states always include pending and running); only an operator's cancel or
# manual_retry can move a row into its unique states, and the client refuses that with
# DuplicateTask while another row holds the key.

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Final

from ._errors import IllegalTransition
from ._row import Cond, Effect, TaskRow, TaskStatus, TransitionParams, change, holds

__all__ = [
    "FENCED_EVENTS",
    "TRANSITIONS",
    "Cond",
    "Effect",
    "Event",
    "Rule",
    "TaskRow",
    "TaskStatus",
    "TransitionParams",
    "allowed_pairs",
    "apply",
    "matching_rules",
    "mermaid_diagram",
]


class Event(enum.StrEnum):
    """Everything that can happen to a task row, named after what triggers it."""

    ENQUEUE = "enqueue"  # producer inserts the row
    CLAIM = "claim"  # fetcher takes a due pending task
    LEASE_TAKEOVER = "lease_takeover"  # fetcher takes a running task whose lease expired
    COMPLETE = "complete"  # handler returned normally
    FAIL = "fail"  # handler failed with no attempts left
    SKIP_RETRY = "skip_retry"  # handler asked to fail without retrying
    RETRY = "retry"  # handler failed; back-off delay
    SNOOZE = "snooze"  # handler asked to run later; refunds the attempt
    SNOOZE_WITH_ERROR = "snooze_with_error"  # like retry, with the handler's delay
    RELEASE = "release"  # consumer shutting down hands the task back; refunds
    EXTEND_LEASE = "extend_lease"  # heartbeat of a lease holder
    CANCEL = "cancel"  # client
    MANUAL_RETRY = "manual_retry"  # client re-queues a failed or cancelled task
    DELETE = "delete"  # client
    RESCUE = "rescue"  # janitor recovers a running task whose lease expired
    CLEAN = "clean"  # janitor deletes finalized tasks older than the retention


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the transition table. ``None`` in sources/target means "no row"."""

    event: Event
    sources: tuple[TaskStatus | None, ...]
    guard: tuple[Cond, ...]
    target: TaskStatus | None
    effects: tuple[Effect, ...]


_ABSENT = None
_PEN, _RUN = TaskStatus.PENDING, TaskStatus.RUNNING
_COM, _FAI, _CAN = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED
_E, _C, _X = Event, Cond, Effect
_TO_FAILED = (_X.MESSAGE, _X.FINALIZE, _X.CLEAR_LEASE)
_TO_LEASED = (_X.CONSUME_ATTEMPT, _X.TAKE_LEASE)

# fmt: off
TRANSITIONS: Final[tuple[Rule, ...]] = (
    Rule(_E.ENQUEUE, (_ABSENT,), (), _PEN, (_X.CREATE,)),
    Rule(_E.CLAIM, (_PEN,), (_C.DUE,), _RUN, _TO_LEASED),
    Rule(_E.LEASE_TAKEOVER, (_RUN,), (_C.LEASE_EXPIRED, _C.LEASED, _C.HAS_ATTEMPTS), _RUN,
         (*_TO_LEASED, _X.MESSAGE)),
    Rule(_E.LEASE_TAKEOVER, (_RUN,), (_C.LEASE_EXPIRED, _C.LEASED, _C.NO_ATTEMPTS), _FAI,
         _TO_FAILED),
    Rule(_E.LEASE_TAKEOVER, (_RUN,), (_C.LEASE_EXPIRED, _C.UNLEASED, _C.HAS_SPARE_ATTEMPT),
         _RUN, (_X.CHARGE_ATTEMPT, *_TO_LEASED, _X.MESSAGE)),
    Rule(_E.LEASE_TAKEOVER, (_RUN,), (_C.LEASE_EXPIRED, _C.UNLEASED, _C.NO_SPARE_ATTEMPT),
         _FAI, (_X.CHARGE_ATTEMPT, *_TO_FAILED)),
    Rule(_E.COMPLETE, (_RUN,), (_C.TOKEN_MATCHES,), _COM, (_X.FINALIZE, _X.CLEAR_LEASE)),
    Rule(_E.FAIL, (_RUN,), (_C.TOKEN_MATCHES,), _FAI, _TO_FAILED),
    Rule(_E.SKIP_RETRY, (_RUN,), (_C.TOKEN_MATCHES,), _FAI, _TO_FAILED),
    Rule(_E.RETRY, (_RUN,), (_C.TOKEN_MATCHES, _C.HAS_ATTEMPTS), _PEN,
         (_X.DELAY, _X.MESSAGE, _X.CLEAR_LEASE)),
    Rule(_E.RETRY, (_RUN,), (_C.TOKEN_MATCHES, _C.NO_ATTEMPTS), _FAI, _TO_FAILED),
    Rule(_E.SNOOZE, (_RUN,), (_C.TOKEN_MATCHES,), _PEN,
         (_X.REFUND_ATTEMPT, _X.DELAY, _X.CLEAR_LEASE)),
    Rule(_E.SNOOZE_WITH_ERROR, (_RUN,), (_C.TOKEN_MATCHES, _C.HAS_ATTEMPTS), _PEN,
         (_X.DELAY, _X.MESSAGE, _X.CLEAR_LEASE)),
    Rule(_E.SNOOZE_WITH_ERROR, (_RUN,), (_C.TOKEN_MATCHES, _C.NO_ATTEMPTS), _FAI, _TO_FAILED),
    Rule(_E.RELEASE, (_RUN,), (_C.TOKEN_MATCHES,), _PEN,
         (_X.REFUND_ATTEMPT, _X.UNBLOCK, _X.CLEAR_LEASE)),
    Rule(_E.EXTEND_LEASE, (_RUN,), (_C.TOKEN_MATCHES,), _RUN, (_X.RENEW_LEASE,)),
    Rule(_E.CANCEL, (_PEN, _RUN, _FAI), (), _CAN, (_X.FINALIZE_ONCE, _X.CLEAR_LEASE)),
    Rule(_E.CANCEL, (_CAN,), (), _CAN, ()),  # cancelling twice is a no-op, not an error
    Rule(_E.MANUAL_RETRY, (_FAI, _CAN), (), _PEN,
         (_X.UNFINALIZE, _X.UNBLOCK, _X.ENSURE_ATTEMPT, _X.CLEAR_LEASE)),
    Rule(_E.DELETE, (_PEN, _COM, _FAI, _CAN), (), _ABSENT, ()),
    Rule(_E.RESCUE, (_RUN,), (_C.TOKEN_MATCHES, _C.LEASE_EXPIRED, _C.HAS_ATTEMPTS), _PEN,
         (_X.DELAY, _X.MESSAGE, _X.CLEAR_LEASE)),
    Rule(_E.RESCUE, (_RUN,), (_C.TOKEN_MATCHES, _C.LEASE_EXPIRED, _C.NO_ATTEMPTS), _FAI,
         _TO_FAILED),
    Rule(_E.RESCUE, (_RUN,), (_C.UNLEASED_AS_READ, _C.LEASE_EXPIRED, _C.HAS_SPARE_ATTEMPT),
         _PEN, (_X.CHARGE_ATTEMPT, _X.DELAY, _X.MESSAGE, _X.CLEAR_LEASE)),
    Rule(_E.RESCUE, (_RUN,), (_C.UNLEASED_AS_READ, _C.LEASE_EXPIRED, _C.NO_SPARE_ATTEMPT),
         _FAI, (_X.CHARGE_ATTEMPT, *_TO_FAILED)),
    Rule(_E.CLEAN, (_COM, _FAI, _CAN), (_C.RETENTION_PASSED,), _ABSENT, ()),
)
# fmt: on

FENCED_EVENTS: Final[frozenset[Event]] = frozenset(
    rule.event for rule in TRANSITIONS if Cond.TOKEN_MATCHES in rule.guard
)


# The starting point of enqueue's effects: an empty pending row.
_BLANK: Final = TaskRow(_PEN, 0, 0, 0, None, 0.0, None)


def matching_rules(row: TaskRow | None, event: Event, params: TransitionParams) -> list[Rule]:
    """Return the rules of ``event`` whose source and guard accept ``row``.

    The table is built so that this list has at most one element.
    """
    status = None if row is None else row.status
    return [
        rule
        for rule in TRANSITIONS
        if rule.event is event
        and status in rule.sources
        and (not rule.guard if row is None else all(holds(c, row, params) for c in rule.guard))
    ]


def apply(row: TaskRow | None, event: Event, params: TransitionParams) -> TaskRow | None:
    """Apply ``event`` to ``row`` and return the new row (``None`` = deleted).

    Args:
        row: The current row, or ``None`` if the task does not exist.
        event: What happened.
        params: The clock, delays and tokens the event carries.

    Returns:
        The row after the transition. Fenced events that no rule accepts return
        ``row`` unchanged.

    Raises:
        IllegalTransition: A non-fenced event that no rule accepts.
        ValueError: claim or lease_takeover without ``params.new_token``.
    """
    rules = matching_rules(row, event, params)
    if not rules:
        if event in FENCED_EVENTS:
            return row
        raise IllegalTransition(event, None if row is None else row.status)
    rule = rules[0]
    if rule.target is None:
        return None
    new = _BLANK if row is None else row
    for effect in rule.effects:
        new = change(effect, new, params)
    return replace(new, status=rule.target)


def allowed_pairs() -> tuple[tuple[Event, TaskStatus | None], ...]:
    """Every (event, from-status) pair some rule accepts (guards permitting), in table order.

    A ``None`` status stands for a missing row (only enqueue accepts it).
    """
    pairs = ((rule.event, source) for rule in TRANSITIONS for source in rule.sources)
    return tuple(dict.fromkeys(pairs))


def mermaid_diagram() -> str:
    """Render the transition table as a Mermaid ``stateDiagram-v2``.

    Each edge is labelled with the events that take it; ``[*]`` is "no row".
    """
    edges: dict[tuple[str, str], list[str]] = {}
    for rule in TRANSITIONS:
        for source in rule.sources:
            key = (source or "[*]", rule.target or "[*]")
            labels = edges.setdefault(key, [])
            if rule.event not in labels:
                labels.append(rule.event)
    lines = ["stateDiagram-v2"]
    lines += [f"    {a} --> {b} : {', '.join(labels)}" for (a, b), labels in edges.items()]
    return "\n".join(lines) + "\n"
