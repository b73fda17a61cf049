"""Completion batching: which handler outcomes to write, and when."""

# Theory of operation
# -------------------
# Handlers report one Outcome per finished task; the completer writes them in batches,
# one array-based UPDATE per kind. CompletionBatch decides what goes into each batch and
# when a batch is due; it does no I/O and reads no clock (``now`` is an argument and
# must not decrease between calls).
# Invariants:
#   * At most one outcome per task id is pending. Of two outcomes for one task, the
#     newer wins: the one with the higher lease token (a report from a lease that was
#     since taken over never displaces the new lease holder's), then the later arrival.
#     The winner keeps the task's place in the queue and its age.
#   * Nothing is dropped: every outcome leaves through exactly one take() unless a newer
#     one for its task supersedes it. After a failed write, requeue() puts a plan back
#     under the same rule; its outcomes keep their age, so they go ahead of newer ones.
#   * take() returns at most max_size outcomes, oldest first, so a plan never holds the
#     same id twice and its per-kind statements may run in any order.
#   * A flush is due when max_size outcomes are pending, or when the oldest pending
#     outcome has waited max_age seconds; deadline() says when the latter happens.
# The queue stays sorted by age, so the oldest outcome is at its head.

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._progress import Progress


class OutcomeKind(enum.StrEnum):
    """How a handler run ended, as far as the database write is concerned."""

    COMPLETE = "complete"
    FAIL = "fail"  # also skip_retry: the task becomes failed
    RETRY = "retry"  # also snooze_with_error: pending after ``delay``, or failed if spent
    SNOOZE = "snooze"  # pending after ``delay``; the attempt is refunded
    RELEASE = "release"  # handed back at shutdown; pending now, attempt refunded


@dataclass(slots=True)
class Outcome:
    """One task's result, fenced by the lease token under which it ran (built once per task,
    so not frozen: a frozen dataclass costs several times more to build; nothing changes it).

    Attributes:
        task_id: The task's id.
        lease_token: The token of the lease the handler ran under.
        kind: What to write.
        delay: Seconds until the task is due again (retry and snooze only).
        message: Error text to append (fail and retry only).
        result: The handler's encoded return value (complete only; None: it returned None).
        codec: How ``result`` is encoded (``"bytes"`` or ``"json"``), with ``result``.
        progress: The last progress the handler reported, written with the completion
            (complete only; None: it reported none).

    Raises:
        ValueError: ``delay`` is negative or not finite.
    """

    task_id: int
    lease_token: int
    kind: OutcomeKind
    delay: float = 0.0
    message: str | None = None
    result: bytes | None = None
    codec: str | None = None
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"outcome delay must be finite and >= 0, got {self.delay!r}")


# (outcome, since when its task has had an outcome pending, arrival number)
_Entry = tuple[Outcome, float, int]


@dataclass(frozen=True, slots=True)
class KindBatch:
    """The outcomes of one kind in a plan, as parallel arrays for one UPDATE."""

    kind: OutcomeKind
    ids: tuple[int, ...]
    tokens: tuple[int, ...]
    delays: tuple[float, ...]
    messages: tuple[str | None, ...]
    #: Per outcome: (result, codec, progress); None when no outcome of the batch has any
    #: (the common case: the write then binds no arrays for them).
    extras: tuple[tuple[bytes | None, str | None, Progress | None], ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """What one flush writes.

    Attributes:
        batches: One non-empty batch per kind present, in ``OutcomeKind`` order.
        outcomes: All outcomes of the plan, oldest first (task ids are distinct).
        added_at: Since when each task has had an outcome pending (parallel to
            ``outcomes``); the age a requeued outcome resumes with.
        arrivals: Arrival number of each outcome (parallel to ``outcomes``); tells
            requeue which of two reports with the same lease token is newer.
    """

    batches: tuple[KindBatch, ...]
    outcomes: tuple[Outcome, ...]
    added_at: tuple[float, ...]
    arrivals: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.outcomes)

    def batch(self, kind: OutcomeKind) -> KindBatch:
        """Return the batch of ``kind`` (empty if the plan has none)."""
        for batch in self.batches:
            if batch.kind is kind:
                return batch
        return KindBatch(kind, (), (), (), ())


def _extras(
    group: list[Outcome],
) -> tuple[tuple[bytes | None, str | None, Progress | None], ...] | None:
    if all(o.result is None and o.progress is None for o in group):
        return None
    return tuple((o.result, o.codec, o.progress) for o in group)


def _plan(entries: list[_Entry]) -> FlushPlan:
    groups: dict[OutcomeKind, list[Outcome]] = {}
    for outcome, _, _ in entries:  # one pass; kinds are then put in OutcomeKind order
        group = groups.get(outcome.kind)
        if group is None:
            groups[outcome.kind] = [outcome]
        else:
            group.append(outcome)
    batches = [
        KindBatch(
            kind,
            tuple(o.task_id for o in group),
            tuple(o.lease_token for o in group),
            tuple(o.delay for o in group),
            tuple(o.message for o in group),
            _extras(group),
        )
        for kind in OutcomeKind
        if (group := groups.get(kind))
    ]
    return FlushPlan(
        tuple(batches),
        tuple(outcome for outcome, _, _ in entries),
        tuple(since for _, since, _ in entries),
        tuple(arrival for _, _, arrival in entries),
    )


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
        self._arrivals = 0

    def __len__(self) -> int:
        """Return the number of pending outcomes (distinct task ids)."""
        return len(self._pending)

    def add(self, outcome: Outcome, now: float) -> None:
        """Queue ``outcome``, replacing a pending one for the same task (see module)."""
        self._arrivals += 1
        current = self._pending.get(outcome.task_id)
        if current is None:
            self._pending[outcome.task_id] = (outcome, now, self._arrivals)
        elif outcome.lease_token >= current[0].lease_token:
            self._pending[outcome.task_id] = (outcome, current[1], self._arrivals)

    def deadline(self) -> float | None:
        """Return when the age trigger fires, or ``None`` if nothing is pending."""
        if not self._pending:
            return None
        _, oldest, _ = next(iter(self._pending.values()))
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

        Each outcome competes with any outcome pending for its task under the rule of
        :meth:`add` (newer lease token, then later arrival, wins), and the winner keeps
        the older of the two ages, so requeued outcomes sort ahead of newer ones.
        Requeueing a plan twice is harmless.
        """
        returning: list[_Entry] = []
        for outcome, since, arrival in zip(
            plan.outcomes, plan.added_at, plan.arrivals, strict=True
        ):
            current = self._pending.pop(outcome.task_id, None)
            if current is None:
                returning.append((outcome, since, arrival))
            elif (outcome.lease_token, arrival) > (current[0].lease_token, current[2]):
                returning.append((outcome, min(since, current[1]), arrival))
            else:
                returning.append((current[0], min(since, current[1]), current[2]))
        merged = sorted(chain(returning, self._pending.values()), key=lambda e: e[1])
        self._pending = OrderedDict((entry[0].task_id, entry) for entry in merged)
