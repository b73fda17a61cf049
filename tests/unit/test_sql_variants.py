"""The SQL loader's variants: one text, a statement per variant, each with only its regions."""

from __future__ import annotations

import pytest

from asynqpg_trio._pg._sql import parse
from asynqpg_trio._pg._tasks_repo import QUERIES

TEXT = """
-- name: pick
-- variants: pick_many
SELECT id
  -- only pick {
  FROM one
  -- }
  -- only pick_many {
  FROM many
  -- }
WHERE ready;

-- name: other
SELECT 1;
"""


def test_each_variant_keeps_its_own_regions_only() -> None:
    blocks = parse(TEXT)
    assert set(blocks) == {"pick", "pick_many", "other"}
    assert "FROM one" in blocks["pick"] and "FROM many" not in blocks["pick"]
    assert "FROM many" in blocks["pick_many"] and "FROM one" not in blocks["pick_many"]
    for body in blocks.values():
        assert "-- only" not in body and "-- }" not in body
    assert blocks["pick"].endswith("WHERE ready")


@pytest.mark.parametrize(
    "broken",
    [
        TEXT.replace("-- only pick_many {", "-- only nobody {"),  # not a variant of the block
        TEXT.replace("  -- }\nWHERE", "WHERE"),  # a region left open
        TEXT.replace("-- variants: pick_many", "-- variants: other"),  # a name taken twice
    ],
)
def test_a_malformed_variant_fails_at_load(broken: str) -> None:
    with pytest.raises(RuntimeError):
        parse(broken)


def test_the_claim_statements_differ_in_how_they_pick_rows() -> None:
    assert "LIMIT 2 * w.n" in QUERIES.claim_spread
    assert "LIMIT 2 * w.n" not in QUERIES.claim
    tail = QUERIES.claim[QUERIES.claim.index("), ranked AS") :]
    assert QUERIES.claim_spread.endswith(tail)
