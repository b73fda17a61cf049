"""Defaults that adapt: a type's prefetch and the completer's flush delay follow the rates
measured while the consumer runs (pure).

Theory of operation
-------------------
Two things are measured while the consumer runs:

* per task type, the handlers' speed: the mean seconds a handler run takes (`mean_duration`,
  an exponentially weighted mean, weight `DURATION_WEIGHT` for each new run), kept by the
  lease book; ``workers / mean`` is what the type's handlers can finish per second;
* the rate at which outcomes reach the completer, by a `RateMeter` (an exponentially decaying
  count of events, time constant `RATE_TAU`; ``now`` comes in as an argument).

*Prefetch* (the default ``prefetch=None``): a type's capacity follows its backlog.  With no
backlog (its last claim got less than it asked for: everything ready was taken), or before any
run was measured, the capacity is ``2 * workers``, the old fixed default: claims stay small and
are sent at once.  While the type is backlogged (its last claim got all it asked for), the
buffer covers `HORIZON` seconds of its handlers' speed: ``workers * HORIZON / mean``, at least
``workers`` and at most `MAX_PREFETCH`.  Slow handlers (a run longer than `HORIZON`) keep the
buffer at ``workers`` and leave the backlog to other consumers; fast ones (no-op tasks take
microseconds) get hundreds of rows per claim rather than ten: a claim costs a round trip and
a statement whatever its size.  The first full claim of a burst is enough to switch: the next
claim is large.

*Flush delay* (the default ``batch_interval=None``): the oldest outcome waits at most
``MAX_FLUSH_DELAY * min(1, rate / FULL_RATE)`` before the completer writes.  Idle (one task
now and then) that is about zero: each outcome is written at once.  Draining, outcomes wait up
to `MAX_FLUSH_DELAY`, so that one transaction writes hundreds of them (the size trigger,
``batch_size``, still caps a flush).  The delay only grows with the rate, never above its
bound.

No I/O, no clock, no randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "FULL_RATE",
    "HORIZON",
    "MAX_FLUSH_DELAY",
    "MAX_PREFETCH",
    "RATE_TAU",
    "DURATION_WEIGHT",
    "RateMeter",
    "adaptive_limit",
    "flush_delay",
    "max_adaptive_limit",
    "mean_duration",
]

#: Weight of each new handler run in a type's mean duration.
DURATION_WEIGHT = 0.1
#: Seconds of a type's measured handler speed its prefetch buffer covers.
HORIZON = 0.05
#: The largest adaptive prefetch buffer of one type.
MAX_PREFETCH = 500
#: Time constant (seconds) of the rate meters: past events weigh e^(-age / RATE_TAU).
RATE_TAU = 0.1
#: The longest an outcome waits for its batch under the adaptive rule (seconds).
MAX_FLUSH_DELAY = 0.05
#: Outcomes per second at and above which they wait the whole `MAX_FLUSH_DELAY`.
FULL_RATE = 2000.0


@dataclass(slots=True)
class RateMeter:
    """Events per second, exponentially weighted over the last `RATE_TAU` seconds or so.

    ``now`` must not decrease between calls.  A steady rate r read after several time
    constants reads r (within a few percent); with no events the reading decays to 0.
    """

    tau: float = RATE_TAU
    _mass: float = 0.0  # decayed count of events, as of _at
    _at: float | None = None

    def add(self, count: int, now: float) -> None:
        """Record ``count`` events at ``now``."""
        self._decay(now)
        self._mass += count

    def rate(self, now: float) -> float:
        """Events per second as of ``now`` (>= 0)."""
        self._decay(now)
        return self._mass / self.tau

    def _decay(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._mass *= math.exp((self._at - now) / self.tau)
        if self._at is None or now > self._at:
            self._at = now


def mean_duration(mean: float | None, seconds: float) -> float:
    """The mean handler duration after one more run of ``seconds`` (None: the first run)."""
    if mean is None:
        return seconds
    return mean + DURATION_WEIGHT * (seconds - mean)


def adaptive_limit(workers: int, mean: float | None, *, backlogged: bool) -> int:
    """A type's capacity (tasks held at once) when its prefetch adapts (see the module):
    ``2 * workers`` unless backlogged with a measured ``mean`` handler duration; then
    ``workers`` plus `HORIZON` seconds of the handlers' speed, within ``[workers,
    MAX_PREFETCH]`` (``workers`` alone when that exceeds `MAX_PREFETCH`)."""
    if not backlogged or mean is None or not math.isfinite(mean) or mean < 0:
        return 2 * workers
    speed = workers / max(mean, 1e-9)  # tasks per second
    return workers + max(workers, min(math.ceil(speed * HORIZON), MAX_PREFETCH))


def max_adaptive_limit(workers: int) -> int:
    """The most `adaptive_limit` ever returns for ``workers``."""
    return workers + max(workers, MAX_PREFETCH)


def flush_delay(rate: float) -> float:
    """Seconds the oldest outcome may wait for its batch, given the outcome ``rate`` (per
    second): 0 when idle, rising with the rate to `MAX_FLUSH_DELAY` at `FULL_RATE`."""
    if not rate > 0:
        return 0.0
    return MAX_FLUSH_DELAY * min(1.0, rate / FULL_RATE)
