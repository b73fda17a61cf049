"""What a claim takes, predicted from the rows alone: the stateful test's model of the queue claim
(``claim`` in ``_pg/sql/tasks.sql``, ``asynqpg_limit_allowance`` in migration 0002).

Written from the statement's documented rules, not from its code or the fake's: per (queue,
type) pair of the plan, paused queues left out, the due rows (pending, or running with an
expired lease), most urgent first (larger priority, then earlier ``blocked_till``, then smaller
id), up to the pair's number (no more than its type's room); of a type's rows, only the most
urgent up to the type's room (or all its pairs' numbers together, if fewer); then, over
everything picked and most urgent first, a row is kept when its rank in its type and its rank
in its queue are within every room that names them: the plan's ``type_room`` and
``queue_room``, and what each cluster-wide limit on a wanted queue or type allows
(``max_running`` minus the running tasks it covers, the whole tokens in its bucket). A rate
limit's bucket refills at every claim that wants its scope and is charged for the tasks the
claim starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asynqpg_trio._core._row import TaskRow, TaskStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from asynqpg_trio._core._pacing import ClaimPlan

__all__ = ["ModelLimit", "Placement", "in_scope", "predict_claim", "urgency"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a task waits: its queue and type, and its priority."""

    queue: str
    type: str
    priority: int


@dataclass(slots=True)
class ModelLimit:
    """A cluster-wide limit as the model holds it (times in the model's seconds)."""

    max_running: int | None
    rate: int | None
    per: float | None
    burst: int | None
    tokens: float
    refilled_at: float

    @classmethod
    def new(
        cls, max_running: int | None, rate: tuple[int, float, int] | None, now: float
    ) -> ModelLimit:
        """A limit set at ``now``: its bucket (if any) starts full."""
        if rate is None:
            return cls(max_running, None, None, None, 0.0, now)
        starts, per, burst = rate
        return cls(max_running, starts, per, burst, float(burst), now)

    def refill(self, now: float) -> None:
        """Bring the bucket up to ``now`` (as the claim's allowance does, then stores it; a
        limit without a rate keeps its refilled_at)."""
        if self.rate is not None and self.per is not None and self.burst is not None:
            elapsed = max(now - self.refilled_at, 0.0)
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate / self.per)
            self.refilled_at = now

    def allows(self, running: int) -> float:
        """How many of its tasks a claim may start now (``running``: its tasks running)."""
        room = math.inf
        if self.max_running is not None:
            room = self.max_running - running
        if self.rate is not None:
            room = min(room, math.floor(self.tokens))
        return room


def urgency(task_id: int, row: TaskRow, where: Placement) -> tuple[int, float, int]:
    """The claim's order: larger priority first, then earlier blocked_till, then smaller id."""
    return (-where.priority, row.blocked_till, task_id)


def in_scope(where: Placement, scope: str, name: str) -> bool:
    """Whether a limit on ``(scope, name)`` covers a task placed at ``where``."""
    return (where.queue if scope == "queue" else where.type) == name


def _due(row: TaskRow, now: float) -> bool:
    return row.status in (TaskStatus.PENDING, TaskStatus.RUNNING) and row.blocked_till <= now


def predict_claim(
    rows: Mapping[int, TaskRow],
    where: Mapping[int, Placement],
    plan: ClaimPlan,
    *,
    now: float,
    paused: Iterable[str],
    limits: Mapping[tuple[str, str], ModelLimit],
) -> list[int]:
    """The ids a claim takes, most urgent first.  Refills the buckets of the limits the claim
    reads; the caller charges them for the tasks that start."""
    stopped = set(paused)
    wanted = {pair: n for pair, n in plan.pairs.items() if n > 0 and pair[0] not in stopped}
    by_type: dict[str, list[int]] = {}
    for (queue, task_type), n in wanted.items():
        due = [
            i
            for i, row in rows.items()
            if (where[i].queue, where[i].type) == (queue, task_type)
            and _due(row, now)
            and where[i].priority >= plan.min_priority
        ]
        room = plan.type_room.get(task_type, n)
        by_type.setdefault(task_type, []).extend(
            sorted(due, key=lambda i: urgency(i, rows[i], where[i]))[: min(n, room)]
        )
    picked: list[int] = []
    for task_type, ids in by_type.items():
        room = plan.type_room.get(task_type, len(ids))
        picked += sorted(ids, key=lambda i: urgency(i, rows[i], where[i]))[:room]
    rooms: dict[tuple[str, str], list[float]] = {}
    for task_type, n in plan.type_room.items():
        rooms.setdefault(("type", task_type), []).append(n)
    for queue, n in plan.queue_room.items():
        rooms.setdefault(("queue", queue), []).append(n)
    read = {("queue", q) for q, _ in wanted} | {("type", t) for _, t in wanted}
    for key, limit in limits.items():
        if key in read:
            limit.refill(now)
            running = sum(
                1
                for i, row in rows.items()
                if row.status is TaskStatus.RUNNING and in_scope(where[i], *key)
            )
            rooms.setdefault(key, []).append(limit.allows(running))
    ranks: dict[tuple[str, str], int] = {}
    chosen: list[int] = []
    for i in sorted(picked, key=lambda i: urgency(i, rows[i], where[i])):
        keys = (("type", where[i].type), ("queue", where[i].queue))
        for key in keys:
            ranks[key] = ranks.get(key, 0) + 1
        if all(ranks[key] <= room for key in keys for room in rooms.get(key, ())):
            chosen.append(i)
    return chosen
