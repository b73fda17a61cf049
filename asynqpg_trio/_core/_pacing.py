"""How many tasks the fetcher asks for, per queue and type (pure).

Theory of operation
-------------------
A type's capacity is its workers plus its prefetch buffer (``limits``); ``busy`` counts the
claimed tasks not yet finished by a handler.  The fetcher asks for a type's whole free
capacity, but only when at least half of it is free or the type holds nothing: claims come in
batches rather than one per finished task.

A consumer serves a set of queues; a queue may have a cap of its own (most of its tasks held
at once by this consumer).  The claim is planned per (queue, type) pair: each pair may take up
to the smaller of its type's and its queue's room, and the claim statement then keeps, per
type and per queue, only the most urgent rows up to that type's or queue's room (``type_room``,
``queue_room``), so a type's room is shared by its queues in priority order, never exceeded.
No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._task import MIN_PRIORITY

__all__ = ["ClaimPlan", "plan_claim"]


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """One claim: how many tasks each (queue, type) pair may take, and the rooms they share.

    Attributes:
        pairs: (queue, type) -> most tasks of that type to take from that queue.
        type_room: type -> most tasks of that type to take in all.
        queue_room: queue -> most tasks to take from that queue in all (capped queues only).
        min_priority: only tasks of this priority or more urgent (an urgent claim's bound).
    """

    pairs: dict[tuple[str, str], int]
    type_room: dict[str, int]
    queue_room: dict[str, int]
    min_priority: int = MIN_PRIORITY

    @classmethod
    def of(cls, wanted: Mapping[str, int], queue: str = "default") -> ClaimPlan:
        """A plan taking up to ``wanted[type]`` tasks of each type from one queue."""
        return cls({(queue, t): n for t, n in wanted.items()}, dict(wanted), {})

    def wanted_of(self, task_type: str) -> int:
        """The most tasks of ``task_type`` this claim can bring."""
        by_queues = sum(n for (_, t), n in self.pairs.items() if t == task_type)
        return min(self.type_room.get(task_type, 0), by_queues)


def plan_claim(
    free: Mapping[str, int],
    busy: Mapping[str, int],
    limits: Mapping[str, int],
    queues: Mapping[str, int | None],
    busy_queues: Mapping[str, int],
    *,
    eager: bool = False,
) -> ClaimPlan:
    """What to ask for: each type's free capacity, in batches, within each queue's cap.

    ``queues`` maps each served queue to its cap (None: no cap of its own).  A busy type
    waits until half its capacity is free, so that claims stay large; ``eager`` (an urgent
    task was announced) asks for whatever room there is now.
    """
    type_room: dict[str, int] = {}
    for task_type, n in free.items():
        if n <= 0:
            continue
        if eager or busy.get(task_type, 0) == 0 or n >= max(1, limits[task_type] // 2):
            type_room[task_type] = n
    queue_room: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for queue, cap in queues.items():
        room = None if cap is None else cap - busy_queues.get(queue, 0)
        if room is not None:
            if room <= 0:
                continue
            queue_room[queue] = room
        for task_type, n in type_room.items():
            pairs[(queue, task_type)] = n if room is None else min(n, room)
    return ClaimPlan(pairs=pairs, type_room=type_room, queue_room=queue_room)
