"""Properties of the adaptive defaults (``_core/_adaptive.py``).

Prefetch: with no backlog, or nothing measured yet, a type's capacity is the old fixed default
(twice its workers); backlogged, it never drops below that nor exceeds its bound, never shrinks
as the handlers get faster, keeps slow handlers (a run longer than the horizon) at the default,
and gives fast ones (no-op tasks) the whole bound.  Flush delay: zero when idle, never above
its bound, never shorter at a higher rate.  The rate meter: never negative, decays to zero
without events, and reads a steady rate after a few time constants.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio._core._adaptive import (
    HORIZON,
    MAX_FLUSH_DELAY,
    MAX_PREFETCH,
    RATE_TAU,
    RateMeter,
    adaptive_limit,
    flush_delay,
    max_adaptive_limit,
    mean_duration,
)

WORKERS = st.integers(min_value=1, max_value=2000)
MEANS = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
RATES = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)


@given(WORKERS, st.one_of(st.none(), MEANS), st.booleans())
def test_capacity_within_bounds(workers: int, mean: float | None, backlogged: bool) -> None:
    limit = adaptive_limit(workers, mean, backlogged=backlogged)
    assert 2 * workers <= limit <= max_adaptive_limit(workers)
    assert limit <= workers + max(workers, MAX_PREFETCH)
    if not backlogged or mean is None:
        assert limit == 2 * workers  # idle: small claims, as the old default


@given(WORKERS, MEANS, MEANS)
def test_faster_handlers_never_get_less(workers: int, a: float, b: float) -> None:
    slow, fast = max(a, b), min(a, b)
    assert adaptive_limit(workers, fast, backlogged=True) >= adaptive_limit(
        workers, slow, backlogged=True
    )


@given(WORKERS, st.floats(min_value=HORIZON, max_value=1e4))
def test_slow_handlers_keep_the_default(workers: int, mean: float) -> None:
    assert adaptive_limit(workers, mean, backlogged=True) == 2 * workers


@given(st.integers(min_value=1, max_value=MAX_PREFETCH))
def test_noop_handlers_get_the_whole_bound(workers: int) -> None:
    assert adaptive_limit(workers, 20e-6, backlogged=True) == workers + MAX_PREFETCH


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=50))
def test_mean_duration_stays_within_what_was_seen(runs: list[float]) -> None:
    mean: float | None = None
    for seconds in runs:
        mean = mean_duration(mean, seconds)
    assert mean is not None
    assert min(runs) - 1e-9 <= mean <= max(runs) + 1e-9


@given(RATES, RATES)
def test_flush_delay_grows_with_the_rate_within_its_bound(a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    assert 0.0 <= flush_delay(low) <= flush_delay(high) <= MAX_FLUSH_DELAY
    assert flush_delay(0.0) == 0.0


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=1000), st.floats(min_value=0, max_value=1)),
        max_size=40,
    ),
    st.floats(min_value=0.0, max_value=100.0),
)
def test_rate_meter_never_negative_and_decays(events: list[tuple[int, float]], idle: float) -> None:
    meter = RateMeter()
    now = 0.0
    for count, step in events:
        now += step
        meter.add(count, now)
        assert meter.rate(now) >= 0.0
    before = meter.rate(now)
    after = meter.rate(now + idle)
    assert 0.0 <= after <= before + 1e-9
    assert meter.rate(now + 100 * RATE_TAU) <= before * math.exp(-100) + 1e-9


@given(st.floats(min_value=10.0, max_value=1e5), st.floats(min_value=1e-4, max_value=1e-2))
def test_rate_meter_reads_a_steady_rate(rate: float, step: float) -> None:
    meter = RateMeter()
    now = 0.0
    pending = 0.0
    while now < 10 * RATE_TAU:  # events at a steady rate, in whole counts
        now += step
        pending += rate * step
        count = int(pending)
        pending -= count
        meter.add(count, now)
    # Whole counts and sampling make the reading ripple by up to one step's worth of events.
    ripple = (rate * step + 1) / RATE_TAU
    assert abs(meter.rate(now) - rate) <= 0.02 * rate + ripple
