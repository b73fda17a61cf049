"""The built-in retry policies (they draw jitter, so they live outside the pure core)."""

# Theory of operation
# -------------------
# Thin, immutable wrappers that satisfy the RetryPolicy protocol of _retry.py. All the
# arithmetic is in the pure backoff_delay(); this module only supplies the randomness
# (an injectable rng, so tests can fix it) and validates constructor arguments, so a
# bad configuration fails when the consumer is built rather than when a task fails.

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._retry import backoff_delay, check_cap

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class DefaultRetryPolicy:
    """Polynomial back-off: about ``attempt**4`` seconds with +-10 % jitter, capped.

    Attempt 1 waits 1.0-1.1 s, 2 about 16 s, 3 about 81 s, 5 about 10 min, 10 about
    2.8 h; from attempt 18 on, the default cap of 24 hours applies.

    Attributes:
        max_delay: The longest delay returned, in seconds (finite, > 0).
        rng: Returns a uniform number in ``[0, 1)``; the jitter source.

    Raises:
        ValueError: ``max_delay`` is not finite and positive.
    """

    max_delay: float = 86400.0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        check_cap(self.max_delay)

    def next_retry(self, attempt: int) -> float:
        """Return the delay before the attempt after ``attempt`` (1-based) failed."""
        return backoff_delay(attempt, cap=self.max_delay, jitter=self.rng())


@dataclass(frozen=True, slots=True)
class ConstantRetryPolicy:
    """The same delay after every failure (zero allowed: retry at once).

    Attributes:
        delay: The delay in seconds (finite, >= 0).

    Raises:
        ValueError: ``delay`` is negative or not finite.
    """

    delay: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"the retry delay must be finite and >= 0, got {self.delay!r}")

    def next_retry(self, attempt: int) -> float:
        """Return :attr:`delay`, whatever the attempt."""
        return self.delay
