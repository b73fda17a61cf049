"""The claim's parameters for a plan (`_pg/_claims.py`): which statement, how many candidates
each pair gives in the first round, and whether the consumer's rooms may cut what is picked."""

from __future__ import annotations

from typing import Any

import pytest

from asynqpg_trio._core._pacing import ClaimPlan
from asynqpg_trio._pg._claims import CLAIM, CLAIM_SPREAD, claim_params, claim_statement

QUEUES = [f"q{i}" for i in range(10)]


def params(plan: ClaimPlan) -> dict[str, Any]:
    return claim_params(plan, owner="o", lease=30.0, takeover_message="t", exhausted_message="e")


def test_one_queue_per_type_claims_without_ranking() -> None:
    plan = ClaimPlan.of({"a": 450, "b": 3})
    assert claim_statement(plan) is CLAIM
    got = params(plan)
    assert got["ranked"] is False
    assert got["firsts"] == got["limits"] == [450, 3]


def test_a_capped_queue_is_ranked_whichever_statement() -> None:
    one = ClaimPlan({("q0", "a"): 5}, {"a": 5}, {"q0": 2})
    many = ClaimPlan({(q, "a"): 5 for q in QUEUES}, {"a": 5}, {"q3": 2})
    assert params(one)["ranked"] is True
    assert claim_statement(many) is CLAIM_SPREAD
    assert params(many)["ranked"] is True


def test_claim_ranks_a_type_it_takes_from_several_pairs() -> None:
    # Not what the fetcher plans (a type served from several queues takes claim_spread), but
    # a plan may say so: claim's pairs would then bring more than the type's room.
    plan = ClaimPlan({("q0", "a"): 3, ("q1", "a"): 3}, {"a": 3, "b": 3}, {})
    assert claim_statement(plan) is CLAIM
    assert params(plan)["ranked"] is True


def test_claim_spread_without_caps_is_not_ranked_and_reads_a_share_of_each_queue() -> None:
    plan = ClaimPlan({(q, "a"): 450 for q in QUEUES}, {"a": 450}, {})
    got = params(plan)
    assert claim_statement(plan) is CLAIM_SPREAD
    assert got["ranked"] is False
    assert got["firsts"] == [113] * 10  # 2.5 x 450 / 10, rounded up


@pytest.mark.parametrize(
    ("pairs", "room"),
    [(2, 1), (10, 1), (3, 7), (10, 450), (2, 1000), (7, 5)],
)
def test_a_first_round_takes_at_least_one_and_never_more_than_the_pair_may_bring(
    pairs: int, room: int
) -> None:
    plan = ClaimPlan({(q, "a"): min(room, 40) for q in QUEUES[:pairs]}, {"a": room}, {})
    got = params(plan)
    assert all(1 <= k <= n for k, n in zip(got["firsts"], got["limits"], strict=True))
