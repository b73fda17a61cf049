"""Properties of the back-off formula and the built-in retry policies."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from asynqpg_trio._core._policies import ConstantRetryPolicy, DefaultRetryPolicy
from asynqpg_trio._core._retry import RetryPolicy, backoff_delay

# Any int, including ones whose fourth power would overflow a float many times over.
ATTEMPTS = st.one_of(
    st.integers(-5, 200),
    st.integers(),
    st.integers(min_value=10**15, max_value=10**400),
    st.integers(max_value=-(10**20)),
)
CAPS = st.one_of(
    st.sampled_from([1e-9, 0.5, 1.0, 60.0, 3600.0, 86400.0, 1e308]),
    st.floats(min_value=1e-12, max_value=1e300, allow_nan=False, allow_infinity=False),
)
JITTERS = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def fourth_power_at_least(attempt: int, cap: float) -> bool:
    n = max(attempt, 1)
    return n >= cap or n**4 >= cap


@given(ATTEMPTS, CAPS, JITTERS)
@example(attempt=10**400, cap=1e308, jitter=0.999)
@example(attempt=2**256, cap=1e308, jitter=0.5)
def test_backoff_is_total_nonnegative_and_capped(attempt: int, cap: float, jitter: float) -> None:
    delay = backoff_delay(attempt, cap=cap, jitter=jitter)
    assert isinstance(delay, float)
    assert math.isfinite(delay)
    assert 0.0 <= min(1.0, cap) <= delay <= cap


@given(ATTEMPTS, CAPS, JITTERS)
def test_backoff_is_exactly_the_cap_once_the_base_reaches_it(
    attempt: int, cap: float, jitter: float
) -> None:
    if fourth_power_at_least(attempt, cap):
        assert backoff_delay(attempt, cap=cap, jitter=jitter) == cap


@given(ATTEMPTS, ATTEMPTS, CAPS, JITTERS)
def test_backoff_is_monotone_in_attempt_for_fixed_jitter(
    a: int, b: int, cap: float, jitter: float
) -> None:
    lo, hi = sorted((a, b))
    assert backoff_delay(lo, cap=cap, jitter=jitter) <= backoff_delay(hi, cap=cap, jitter=jitter)


@given(st.integers(-3, 500), CAPS, JITTERS)
def test_jitter_stays_within_ten_percent_below_the_cap(
    attempt: int, cap: float, jitter: float
) -> None:
    if fourth_power_at_least(attempt, cap):
        return
    base = float(max(attempt, 1) ** 4)
    delay = backoff_delay(attempt, cap=cap, jitter=jitter)
    assert 0.9 * base * (1 - 1e-12) <= delay <= 1.1 * base * (1 + 1e-12)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(-1, 1.0, 1.1), (0, 1.0, 1.1), (1, 1.0, 1.1), (2, 14.4, 17.6), (3, 72.9, 89.1)],
)
@given(jitter=JITTERS)
def test_backoff_matches_the_go_examples(
    attempt: int, low: float, high: float, jitter: float
) -> None:
    delay = backoff_delay(attempt, cap=86400.0, jitter=jitter)
    assert low * (1 - 1e-12) <= delay <= high * (1 + 1e-12)  # float rounding at the ends


def test_backoff_extremes_of_jitter() -> None:
    assert backoff_delay(2, cap=100.0, jitter=0.0) == pytest.approx(14.4)
    assert backoff_delay(1, cap=100.0, jitter=0.0) == 1.0  # 0.9 clamped up to 1 s
    assert backoff_delay(1, cap=0.25, jitter=0.5) == 0.25  # a cap below 1 s wins
    assert backoff_delay(18, cap=86400.0, jitter=0.0) == 86400.0


@pytest.mark.parametrize("cap", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_backoff_rejects_a_bad_cap(cap: float) -> None:
    with pytest.raises(ValueError, match="maximum retry delay"):
        backoff_delay(1, cap=cap, jitter=0.5)


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0, math.nan, math.inf])
def test_backoff_rejects_jitter_outside_the_unit_interval(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(1, cap=10.0, jitter=jitter)


@given(ATTEMPTS, CAPS, JITTERS)
def test_default_policy_is_backoff_with_its_rng(attempt: int, cap: float, jitter: float) -> None:
    policy: RetryPolicy = DefaultRetryPolicy(max_delay=cap, rng=lambda: jitter)
    assert policy.next_retry(attempt) == backoff_delay(attempt, cap=cap, jitter=jitter)


@given(st.integers(-10, 30))
def test_default_policy_with_real_randomness_stays_in_bounds(attempt: int) -> None:
    policy = DefaultRetryPolicy()
    base = float(max(attempt, 1) ** 4)
    assert min(1.0, 0.9 * base) <= policy.next_retry(attempt) <= min(1.1 * base, 86400.0)


def test_default_policy_defaults() -> None:
    policy = DefaultRetryPolicy()
    assert policy.max_delay == 86400.0
    assert policy.rng is random.random
    assert "rng" not in repr(policy)


@pytest.mark.parametrize("max_delay", [0.0, -5.0, math.nan, math.inf])
def test_default_policy_rejects_a_bad_cap(max_delay: float) -> None:
    with pytest.raises(ValueError, match="maximum retry delay"):
        DefaultRetryPolicy(max_delay=max_delay)


@given(ATTEMPTS, st.floats(min_value=0.0, max_value=1e9))
def test_constant_policy_ignores_the_attempt(attempt: int, delay: float) -> None:
    policy: RetryPolicy = ConstantRetryPolicy(delay)
    assert policy.next_retry(attempt) == delay


@pytest.mark.parametrize("delay", [-0.001, -1.0, math.nan, math.inf])
def test_constant_policy_rejects_a_bad_delay(delay: float) -> None:
    with pytest.raises(ValueError, match="retry delay"):
        ConstantRetryPolicy(delay)


def test_constant_policy_allows_zero() -> None:
    assert ConstantRetryPolicy(0.0).next_retry(7) == 0.0
