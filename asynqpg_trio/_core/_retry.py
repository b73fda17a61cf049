"""Retry decisions: the policy protocol and the pure back-off formula."""

# Theory of operation
# -------------------
# A retry policy maps "attempt N just failed" (1-based; the stored attempts_elapsed) to
# a delay in seconds before the task may run again. Whether to retry at all is not the
# policy's business: the state table retries while attempts_left >= 1.
# backoff_delay() is the Go library's default policy as a pure function: the caller
# supplies the jitter (a uniform number in [0, 1)), so it is deterministic and total.
# Invariants: for a valid cap and jitter it never raises, whatever the int attempt
# (huge attempts are compared against the cap before any power is taken, so nothing
# overflows); the result lies in [min(1, cap), cap]; with the jitter fixed it is
# non-decreasing in the attempt; below the cap it is within +-10 % of attempt**4.
# The randomness lives in _policies.py, outside the pure core.

from __future__ import annotations

import math
from typing import Protocol

#: The longest delay the queue writes, whatever a policy or a handler asks for (one year).
MAX_DELAY = 366 * 86400.0


def clamp_delay(seconds: float) -> float:
    """A delay the database can store: NaN and negative delays count as none, anything
    longer than `MAX_DELAY` (infinity included) as `MAX_DELAY`."""
    if not seconds >= 0.0:  # NaN too
        return 0.0
    return min(seconds, MAX_DELAY)


class RetryPolicy(Protocol):
    """Decides how long a failed task waits before its next attempt."""

    def next_retry(self, attempt: int) -> float:
        """Return the delay in seconds before the next attempt.

        Args:
            attempt: The 1-based number of the attempt that just failed.

        Returns:
            A non-negative, finite number of seconds.
        """
        ...


def check_cap(cap: float) -> None:
    """Raise ``ValueError`` unless ``cap`` is a usable maximum delay (finite and > 0)."""
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"the maximum retry delay must be finite and positive, got {cap!r}")


def backoff_delay(attempt: int, *, cap: float, jitter: float) -> float:
    """Return the default back-off: ``attempt**4`` seconds, jittered by +-10 %, capped.

    An ``attempt`` below 1 counts as 1. If ``attempt**4 >= cap`` the result is exactly
    ``cap`` (no jitter). Otherwise it is ``attempt**4 * (0.9 + 0.2 * jitter)``, clamped
    to ``[min(1.0, cap), cap]``.

    Args:
        attempt: The 1-based number of the attempt that just failed.
        cap: The largest delay returned, in seconds; finite and positive.
        jitter: A number in ``[0, 1)``, normally drawn uniformly by the caller.

    Returns:
        The delay in seconds.

    Raises:
        ValueError: ``cap`` is not finite and positive, or ``jitter`` is outside
            ``[0, 1)``.
    """
    check_cap(cap)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    n = max(attempt, 1)
    # n >= cap implies n**4 >= cap. Otherwise n < cap < 2**1024, so n**4 is an exact int
    # of at most 4096 bits, and int-to-float comparison in Python is exact.
    if n >= cap or n**4 >= cap:
        return cap
    delay = float(n**4) * (0.9 + 0.2 * jitter)
    return min(cap, max(min(1.0, cap), delay))
