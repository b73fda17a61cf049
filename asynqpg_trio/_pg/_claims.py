"""How a `ClaimPlan` becomes the claim statement and its parameters (pure: no I/O).

``claim`` serves each type from one queue; ``claim_spread`` (a variant of the same text in
``_pg/sql/tasks.sql``) a type served from several queues.  Besides the plan's pairs and rooms,
the client tells the statement how many candidates to read of each pair in its first round
(``firsts``: speed only, the second round reads what the first could have missed) and whether
the consumer's own rooms may cut what it picks (``ranked``: otherwise the statement skips its
window ranking unless a cluster-wide limit applies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._task import MAX_PRIORITY
from ._sql import BLOCKS

if TYPE_CHECKING:
    from .._core._pacing import ClaimPlan

__all__ = ["CLAIM", "CLAIM_SPREAD", "claim_params", "claim_statement"]

#: The two claim statements (the same objects as ``_tasks_repo.QUERIES.claim`` and
#: ``.claim_spread``).
CLAIM: str = BLOCKS["tasks.sql"]["claim"]
CLAIM_SPREAD: str = BLOCKS["tasks.sql"]["claim_spread"]


def claim_statement(plan: ClaimPlan) -> str:
    """``claim``, or ``claim_spread`` when a type is served from several queues (then the
    pairs' candidates are ranked before any is locked; see the statement)."""
    return CLAIM_SPREAD if len(plan.pairs) > len(plan.type_room) else CLAIM


def claim_params(
    plan: ClaimPlan, *, owner: str, lease: float, takeover_message: str, exhausted_message: str
) -> dict[str, Any]:
    """The ``claim`` statement's parameters for ``plan`` (bind them in binary)."""
    limits = [min(n, plan.type_room.get(t, n)) for (_, t), n in plan.pairs.items()]
    return {
        "queues": [queue for queue, _ in plan.pairs],
        "types": [task_type for _, task_type in plan.pairs],
        # A pair never brings more than its type's room.
        "limits": limits,
        "firsts": _first_rounds(plan, limits),
        "room_scopes": ["type"] * len(plan.type_room) + ["queue"] * len(plan.queue_room),
        "room_names": [*plan.type_room, *plan.queue_room],
        "room_n": [*plan.type_room.values(), *plan.queue_room.values()],
        # The priority levels to read, most urgent first (one index range scan each).
        "levels": list(range(MAX_PRIORITY, plan.min_priority - 1, -1)),
        "ranked": _needs_ranking(plan),
        "owner": owner,
        "lease": lease,
        "takeover_message": takeover_message,
        "exhausted_message": exhausted_message,
    }


def _first_rounds(plan: ClaimPlan, limits: list[int]) -> list[int]:
    """How many candidates ``claim_spread`` reads of each pair in its first round: the pair's
    share of twice its type's room (what the statement locks from), a quarter more to spare,
    never more than the pair's own limit.  Only speed depends on it: the second round reads
    whatever the first could have missed."""
    pairs_of: dict[str, int] = {}
    brings: dict[str, int] = {}
    for (_, task_type), n in zip(plan.pairs, limits, strict=True):
        pairs_of[task_type] = pairs_of.get(task_type, 0) + 1
        brings[task_type] = brings.get(task_type, 0) + n
    firsts = []
    for (_, task_type), n in zip(plan.pairs, limits, strict=True):
        wanted = min(brings[task_type], plan.type_room.get(task_type, brings[task_type]))
        share = -(-5 * wanted // (2 * pairs_of[task_type]))  # ceil(2.5 x wanted / pairs)
        firsts.append(min(n, share))
    return firsts


def _needs_ranking(plan: ClaimPlan) -> bool:
    """Whether the consumer's own rooms may cut what the claim picks: a capped queue, or,
    for ``claim``, a type picked from several pairs (``claim_spread`` stops each type at its
    room as it locks).  The cluster-wide limits are checked by the statement itself."""
    if plan.queue_room:
        return True
    if claim_statement(plan) is CLAIM_SPREAD:
        return False
    types = [task_type for _, task_type in plan.pairs]
    return len(types) != len(set(types))
