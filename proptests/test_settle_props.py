"""Properties of the handler actors' pure decisions: the settle rule and the deadline rule
(``_core/_settle.py``).  The fetcher's claim plan has its own: ``test_pacing_props.py``."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from asynqpg_trio import SkipRetry
from asynqpg_trio._core._batching import OutcomeKind
from asynqpg_trio._core._book import Lease
from asynqpg_trio._core._outcome import Decision
from asynqpg_trio._core._policies import ConstantRetryPolicy
from asynqpg_trio._core._settle import (
    DEADLINE_SLACK,
    Settled,
    deadline_after,
    run_error,
    settle,
)

TIMES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
TIMEOUTS = st.one_of(st.floats(min_value=0.0, max_value=1e5), st.just(math.inf))
ERRORS = st.one_of(
    st.none(),
    st.builds(ValueError, st.text(max_size=20)),
    st.builds(SkipRetry, st.text(max_size=20)),
)
POLICY = ConstantRetryPolicy(7)


@given(current=st.one_of(TIMES, st.just(math.inf)), started=TIMES, timeout=TIMEOUTS)
def test_the_deadline_never_ends_a_task_early_and_moves_only_when_it_would(
    current: float, started: float, timeout: float
) -> None:
    moved = deadline_after(current, started, timeout)
    if moved is None:
        assert current >= started + timeout  # kept: already late enough
    else:
        assert current < started + timeout  # moved only because it would end the task early
        assert moved >= started + timeout
        # At most the slack after it (up to float rounding).
        assert math.isinf(moved) or moved - (started + timeout) <= DEADLINE_SLACK + 2 * math.ulp(
            moved
        )
        # A later task of the streak starting within the slack leaves it alone.
        assert deadline_after(moved, started, timeout) is None


@st.composite
def leases(draw: st.DrawFn) -> Lease:
    lease = Lease(
        draw(st.integers(1, 2**62)),
        draw(st.integers(1, 2**62)),
        draw(st.sampled_from(["a", "b"])),
        attempts_left=draw(st.integers(0, 5)),
        attempts_elapsed=draw(st.integers(1, 5)),
    )
    lease.lost = draw(st.booleans())
    lease.released = draw(st.booleans())
    return lease


@given(lease=leases(), error=ERRORS, cut_short=st.booleans(), timeout=st.none() | TIMEOUTS)
def test_a_run_is_settled_by_why_it_ended(
    lease: Lease, error: BaseException | None, cut_short: bool, timeout: float | None
) -> None:
    counted = run_error(error, cut_short=cut_short, task_type=lease.type, timeout=timeout)
    fate = settle(lease, counted, policy=POLICY, message_limit=200)
    if lease.lost:
        assert fate is Settled.LOST  # whatever else happened: write nothing
        return
    if lease.released:
        assert fate is Settled.RELEASED  # cut short by the shutdown grace: no attempt used
        return
    assert isinstance(fate, Decision)
    assert (fate.outcome.task_id, fate.outcome.lease_token) == (lease.task_id, lease.token)
    if cut_short:
        # Timed out, however the handler ended: a failed attempt, never a completion.
        assert isinstance(counted, TimeoutError)
        assert fate.outcome.kind in {OutcomeKind.RETRY, OutcomeKind.FAIL}
        assert "timed out" in (fate.outcome.message or "")
        assert fate.outcome.kind is (
            OutcomeKind.FAIL if lease.attempts_left < 1 else OutcomeKind.RETRY
        )
    elif error is None:
        assert fate.outcome.kind is OutcomeKind.COMPLETE and fate.final_error is None
    else:
        assert counted is error
        assert fate.outcome.kind in {OutcomeKind.RETRY, OutcomeKind.FAIL}
        assert (fate.final_error is not None) == (fate.outcome.kind is OutcomeKind.FAIL)
