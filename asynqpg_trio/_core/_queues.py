"""Queues and cluster-wide limits as the client sees them, and the checks of a limit (pure).

A limit applies to one queue or one task type across every consumer of the database: at most
``max_running`` of its tasks running at once, and at most ``rate`` task starts per ``per``
seconds, in bursts of up to ``burst`` (a token bucket: it holds up to ``burst`` starts and
refills at ``rate`` per ``per``; so in any window of T seconds at most
``burst + rate * T / per`` tasks start).  The claim statement enforces both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._checks import count, seconds
from ._errors import ConfigurationError
from ._task import MAX_QUEUE_LENGTH, MAX_TYPE_LENGTH, check_queue, check_type

__all__ = ["Limit", "LimitParams", "QueueInfo", "check_limit", "limit_scope"]


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue, from `Client.queues`.

    Attributes:
        name: the queue's name.
        paused: whether it is paused (no consumer claims its tasks).
        counts: tasks per status (only statuses it has).
        oldest_ready_age: seconds its longest-waiting ready task has waited (None: none is
            ready).
    """

    name: str
    paused: bool
    counts: Mapping[str, int]
    oldest_ready_age: float | None


@dataclass(frozen=True, slots=True)
class Limit:
    """A cluster-wide limit, from `Client.limits`.

    Attributes:
        scope: ``"queue"`` or ``"type"``.
        name: the queue's or type's name.
        max_running: most of its tasks running at once (None: no such limit).
        rate: most starts per ``per`` seconds on average (None: no rate limit).
        per: the rate's period in seconds (None without a rate).
        burst: most starts at once after a quiet spell (None without a rate).
        running: its tasks running now.
    """

    scope: str
    name: str
    max_running: int | None
    rate: int | None
    per: float | None
    burst: int | None
    running: int


@dataclass(frozen=True, slots=True)
class LimitParams:
    """A checked limit, as the ``set_limit`` statement takes it."""

    scope: str
    name: str
    max_running: int | None
    rate: int | None
    period: float | None
    burst: int | None


def limit_scope(queue: Any, task_type: Any) -> tuple[str, str]:
    """(scope, name) of a limit named by exactly one of ``queue=`` and ``type=``."""
    if (queue is None) == (task_type is None):
        raise ConfigurationError("name exactly one of queue= and type= for a limit")
    try:
        if queue is not None:
            return "queue", check_queue(queue)
        return "type", check_type(task_type)
    except ValueError as ex:
        raise ConfigurationError(
            f"{ex} (queue names are at most {MAX_QUEUE_LENGTH} characters, types at most"
            f" {MAX_TYPE_LENGTH})"
        ) from None


def check_limit(
    queue: Any,
    task_type: Any,
    *,
    max_running: Any = None,
    rate: Any = None,
    per: float | timedelta = 1.0,
    burst: Any = None,
) -> LimitParams:
    """Validate `Client.set_limit`'s arguments; raise `ConfigurationError` with the reason."""
    scope, name = limit_scope(queue, task_type)
    if max_running is None and rate is None:
        raise ConfigurationError("a limit needs max_running=, rate=, or both")
    if max_running is not None:
        max_running = count(max_running, "max_running", minimum=0, maximum=2**31 - 1)
    period: float | None = None
    if rate is not None:
        rate = count(rate, "rate", maximum=2**31 - 1)
        period = seconds(per, "per")
        burst = rate if burst is None else count(burst, "burst", maximum=2**31 - 1)
    elif burst is not None:
        raise ConfigurationError("burst= needs rate=")
    return LimitParams(scope, name, max_running, rate, period, burst)
