"""Completion batching: which handler outcomes to write, and when."""

# Theory of operation
# -------------------
# Handlers report one Outcome per finished task; the completer writes them in batches,
# one array-based UPDATE per kind. CompletionBatch decides what goes into each batch and
# when a batch is due; it does no I/O and reads no clock (``now`` is an argument and
# must not decrease between calls).
# Invariants:
#   * At most one outcome per task id is pending. A second outcome for the same id
#     replaces the first (keeping its place in the queue and its age), unless it
#     carries an older lease token: a report from a lease that was since taken over
#     never displaces the new lease holder's report. Equal tokens: the last one wins.
#   * Nothing is dropped: every pending outcome leaves through exactly one take(), and
#     requeue() puts a plan back (oldest first, ahead of newer outcomes) after a failed
#     write, without displacing a newer outcome for the same id.
#   * take() returns at most max_size outcomes, oldest first, so a plan never holds the
#     same id twice and its per-kind statements may run in any order.
#   * A flush is due when max_size outcomes are pending, or when the oldest pending
#     outcome has waited max_age seconds; deadline() says when the latter happens.
# The pending queue stays sorted by arrival time, so the oldest outcome is at its head.

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain


class OutcomeKind(enum.StrEnum):
    """How a handler run ended, as far as the database write is concerned."""

    COMPLETE = "complete"
    FAIL = "fail"  # also skip_retry: the task becomes failed
    RETRY = "retry"  # also snooze_with_error: pending after ``delay``, or failed if spent
    SNOOZE = "snooze"  # pending after ``delay``; the attempt is refunded
    RELEASE = "release"  # handed back at shutdown; pending now, attempt refunded


@dataclass(frozen=True, slots=True)
class Outcome:
    """One task's result, fenced by the lease token under which it ran.

    Attributes:
        task_id: The task's id.
        lease_token: The token of the lease the handler ran under.
        kind: What to write.
        delay: Seconds until the task is due again (retry and snooze only).
        message: Error text to append (fail and retry only).

    Raises:
        ValueError: ``delay`` is negative or not finite.
    """

    task_id: int
    lease_token: int
    kind: OutcomeKind
    delay: float = 0.0
    message: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"outcome delay must be finite and >= 0, got {self.delay!r}")


_Entry = tuple[Outcome, float]  # (outcome, time its task id became pending)


@dataclass(frozen=True, slots=True)
class KindBatch:
    """The outcomes of one kind in a plan, as parallel arrays for one UPDATE."""

    kind: OutcomeKind
    ids: tuple[int, ...]
    tokens: tuple[int, ...]
    delays: tuple[float, ...]
    messages: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """What one flush writes.

    Attributes:
        batches: One non-empty batch per kind present, in ``OutcomeKind`` order.
        outcomes: All outcomes of the plan, oldest first (task ids are distinct).
        added_at: When each outcome became pending (parallel to ``outcomes``).
    """

    batches: tuple[KindBatch, ...]
    outcomes: tuple[Outcome, ...]
    added_at: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.outcomes)

    def batch(self, kind: OutcomeKind) -> KindBatch:
        """Return the batch of ``kind`` (empty if the plan has none)."""
        for batch in self.batches:
            if batch.kind is kind:
                return batch
        return KindBatch(kind, (), (), (), ())


def _plan(entries: list[_Entry]) -> FlushPlan:
    batches = []
    for kind in OutcomeKind:
        group = [outcome for outcome, _ in entries if outcome.kind is kind]
        if group:
            batches.append(
                KindBatch(
                    kind,
                    tuple(o.task_id for o in group),
                    tuple(o.lease_token for o in group),
                    tuple(o.delay for o in group),
                    tuple(o.message for o in group),
                )
            )
    outcomes = tuple(outcome for outcome, _ in entries)
    return FlushPlan(tuple(batches), outcomes, tuple(t for _, t in entries))


class CompletionBatch:
    """Accumulates outcomes and cuts them into flush plans.

    Args:
        max_size: Most outcomes per plan; this many pending makes a flush due.
        max_age: Seconds the oldest pending outcome may wait before a flush is due
            (``math.inf`` disables the age trigger).

    Raises:
        ValueError: ``max_size < 1`` or ``max_age`` negative or NaN.
    """

    def __init__(self, *, max_size: int, max_age: float) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        if not max_age >= 0:
            raise ValueError(f"max_age must be >= 0, got {max_age!r}")
        self.max_size = max_size
        self.max_age = max_age
        self._pending: OrderedDict[int, _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Return the number of pending outcomes (distinct task ids)."""
        return len(self._pending)

    def add(self, outcome: Outcome, now: float) -> None:
        """Queue ``outcome``, replacing a pending one for the same task (see module)."""
        current = self._pending.get(outcome.task_id)
        if current is None:
            self._pending[outcome.task_id] = (outcome, now)
        elif outcome.lease_token >= current[0].lease_token:
            self._pending[outcome.task_id] = (outcome, current[1])

    def deadline(self) -> float | None:
        """Return when the age trigger fires, or ``None`` if nothing is pending."""
        if not self._pending:
            return None
        _, oldest = next(iter(self._pending.values()))
        return oldest + self.max_age

    def should_flush(self, now: float) -> bool:
        """Return whether a flush is due at time ``now``."""
        if len(self._pending) >= self.max_size:
            return True
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> FlushPlan:
        """Remove and return up to ``max_size`` of the oldest pending outcomes."""
        count = min(len(self._pending), self.max_size)
        return _plan([self._pending.popitem(last=False)[1] for _ in range(count)])

    def requeue(self, plan: FlushPlan) -> None:
        """Put back the outcomes of ``plan``, whose write failed.

        They keep their original age, so they sort ahead of newer outcomes. An outcome
        for a task that has a pending outcome with the same or a newer lease token is
        dropped: the pending one supersedes it. Requeueing a plan twice is harmless.
        """
        returning: list[_Entry] = []
        for outcome, added_at in zip(plan.outcomes, plan.added_at, strict=True):
            current = self._pending.get(outcome.task_id)
            if current is None or outcome.lease_token > current[0].lease_token:
                self._pending.pop(outcome.task_id, None)
                returning.append((outcome, added_at))
        merged = sorted(chain(returning, self._pending.values()), key=lambda e: e[1])
        self._pending = OrderedDict((outcome.task_id, (outcome, t)) for outcome, t in merged)
