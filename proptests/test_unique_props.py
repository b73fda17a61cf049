"""Properties of the pure side of unique tasks: the `Unique` value, windows, and the plan.

* `Unique` accepts exactly the state sets that include pending and running, and equal sets
  (any order, any repeats) make equal values.
* `window_start` is the start of the period ``now`` falls in: at or before it, less than a
  period before it, a whole number of periods after the Unix epoch, and its own window.
* `plan_batch` describes, row by row (``coalesce(array[i], scalar)``), each task's key
  (explicit, or derived from its payload), period in microseconds and states bitmask.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio import InvalidTask, Task, Unique
from asynqpg_trio._core._enqueue import plan_batch
from asynqpg_trio._core._unique import (
    STATUS_BITS,
    derived_key,
    period_micros,
    states_mask,
    window_start,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUSES = st.sampled_from(list(STATUS_BITS))


@given(st.lists(STATUSES, max_size=8))
def test_states_need_pending_and_running(states: list[str]) -> None:
    if {"pending", "running"} <= set(states):
        unique = Unique(states=states)
        assert set(unique.states) == set(states)
        assert unique == Unique(states=sorted(set(states), reverse=True))
        assert states_mask(unique.states) == sum(STATUS_BITS[s] for s in set(states))
    else:
        with pytest.raises(InvalidTask, match=r"unique\.states"):
            Unique(states=states)


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    st.one_of(
        st.integers(1, 10**12),  # microseconds
        st.sampled_from([1_000_000, 3_600_000_000, 86_400_000_000, 604_800_000_000]),
    ),
)
def test_window_start_is_the_period_now_falls_in(now: datetime, micros: int) -> None:
    start = window_start(now, micros)
    period = timedelta(microseconds=micros)
    assert start <= now < start + period
    assert (start - EPOCH) % period == timedelta(0)
    assert window_start(start, micros) == start


UNIQUES = st.one_of(
    st.none(),
    st.builds(
        Unique,
        st.one_of(st.none(), st.sampled_from(["k", "user:1", "é" * 255])),
        period=st.one_of(st.none(), st.sampled_from([1e-6, 0.25, 60, timedelta(hours=1)])),
        states=st.sampled_from([("pending", "running"), list(STATUS_BITS)]),
    ),
)


@given(st.lists(st.tuples(st.sampled_from([b"", b"a", b"b"]), UNIQUES), min_size=1, max_size=8))
def test_plan_describes_each_unique_task(batch: list[tuple[bytes, Unique | None]]) -> None:
    plan = plan_batch([Task("t", payload, unique=u) for payload, u in batch], 3)
    if all(u is None for _, u in batch):
        assert plan.unique_keys is None
        assert "unique_keys" not in plan.params  # the plain statement: nothing to pay
        return
    p = plan.params

    def column(array: str, scalar: str) -> list[Any]:
        if p[array] is None:
            return [p[scalar]] * len(batch)
        assert p[scalar] is None
        return list(p[array])

    expected = [
        (None, None, None)
        if u is None
        else (
            derived_key(payload) if u.key is None else u.key,
            None if u.period is None else period_micros(u.period),
            states_mask(u.states),
        )
        for payload, u in batch
    ]
    got = list(
        zip(
            column("unique_keys", "unique_key"),
            column("unique_periods", "unique_period"),
            column("unique_masks", "unique_mask"),
            strict=True,
        )
    )
    assert got == expected
    assert plan.unique_keys == tuple(key for key, _, _ in expected)
