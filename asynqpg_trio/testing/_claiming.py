"""Which rows a `FakeDatabase` claim takes: the claim statement's choice, in memory (pure).

The reference is the ``claim`` statement in ``_pg/sql/tasks.sql``: per (queue, type) pair of
the plan, paused queues left out, the due rows (pending, or running with an expired lease),
larger priority first, then oldest ``blocked_till``, id as tie-breaker, up to the pair's
number (never more than its type's room); of a type's rows, the most urgent up to its room;
then, over all pairs, per type and per capped queue only the most urgent rows up to the
consumer's room, and per cluster-wide limit only as many as it allows now.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._core._errors import ConfigurationError
from .._core._queues import check_limit
from .._core._row import TaskStatus

if TYPE_CHECKING:
    from .._core._pacing import ClaimPlan
    from ._stored import Record

__all__ = ["FakeLimit", "charge", "choose"]

_WORKING = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass(slots=True)
class FakeLimit:
    """A cluster-wide limit of a fake database (see `FakeDatabase.set_limit`)."""

    max_running: int | None = None
    rate: int | None = None
    period: float | None = None
    burst: int | None = None
    tokens: float = 0.0
    refilled_at: float = 0.0

    @classmethod
    def checked(
        cls,
        scope: str,
        name: str,
        max_running: int | None,
        rate: tuple[int, float] | None,
        burst: int | None,
        *,
        now: float,
    ) -> FakeLimit:
        """The limit `Client.set_limit` would store (its bucket full at ``now``), or the
        `ConfigurationError` it would raise."""
        if scope not in ("queue", "type"):
            raise ConfigurationError(f"scope must be 'queue' or 'type', got {scope!r}")
        starts, period = rate if rate is not None else (None, 1.0)
        queue, task_type = (name, None) if scope == "queue" else (None, name)
        limit = check_limit(
            queue, task_type, max_running=max_running, rate=starts, per=period, burst=burst
        )
        full = float(limit.burst or 0)
        return cls(limit.max_running, limit.rate, limit.period, limit.burst, full, now)

    def allowance(self, running: int, now: float) -> float:
        """How many starts the limit allows now (refilling the bucket first)."""
        allowed = math.inf
        if self.max_running is not None:
            allowed = self.max_running - running
        if self.rate is not None and self.period is not None and self.burst is not None:
            elapsed = max(now - self.refilled_at, 0.0)
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate / self.period)
            self.refilled_at = now
            allowed = min(allowed, math.floor(self.tokens))
        return allowed


def _urgency(record: Record) -> tuple[int, float, int]:
    return (-record.priority, record.row.blocked_till, record.id)


def choose(
    records: Iterable[Record],
    plan: ClaimPlan,
    now: float,
    paused: set[str],
    limits: Mapping[tuple[str, str], FakeLimit],
) -> list[Record]:
    """The records a claim takes, most urgent first (limits' buckets are refilled, not
    charged: the caller charges them for what it starts)."""
    records = list(records)
    by_pair: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        key = (record.queue, record.type)
        if (
            key in plan.pairs
            and record.queue not in paused
            and record.row.status in _WORKING
            and record.row.blocked_till <= now
            and record.priority >= plan.min_priority
        ):
            by_pair.setdefault(key, []).append(record)
    # Each pair brings its most urgent rows (never more than its type's room); of a type's
    # rows only the most urgent up to its room stay, as the claim statement locks them.
    by_type: dict[str, list[Record]] = {}
    for key, due in by_pair.items():
        n = min(plan.pairs[key], plan.type_room.get(key[1], plan.pairs[key]))
        by_type.setdefault(key[1], []).extend(sorted(due, key=_urgency)[:n])
    picked: list[Record] = []
    for task_type, due in by_type.items():
        picked.extend(sorted(due, key=_urgency)[: plan.type_room.get(task_type, len(due))])
    room: dict[tuple[str, str], float] = {("type", t): n for t, n in plan.type_room.items()}
    room.update({("queue", q): n for q, n in plan.queue_room.items()})
    for (scope, name), limit in limits.items():
        if any(_in_scope(r, scope, name) for r in picked):
            running = sum(
                1
                for r in records
                if r.row.status is TaskStatus.RUNNING and _in_scope(r, scope, name)
            )
            allowed = limit.allowance(running, now)
            room[(scope, name)] = min(room.get((scope, name), math.inf), allowed)
    taken: dict[tuple[str, str], int] = {}
    chosen: list[Record] = []
    for record in sorted(picked, key=_urgency):
        keys = (("type", record.type), ("queue", record.queue))
        ranks = {k: taken.get(k, 0) + 1 for k in keys}
        for k in keys:
            taken[k] = ranks[k]
        if all(ranks[k] <= room.get(k, math.inf) for k in keys):
            chosen.append(record)
    return chosen


def charge(limits: Mapping[tuple[str, str], FakeLimit], started: Record) -> None:
    """Take one start from the bucket of every limit covering ``started``."""
    for (scope, name), limit in limits.items():
        if _in_scope(started, scope, name):
            limit.tokens -= 1


def _in_scope(record: Record, scope: str, name: str) -> bool:
    return (record.queue if scope == "queue" else record.type) == name
