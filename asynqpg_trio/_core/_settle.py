"""How a handler actor settles a finished run, and when its streak's deadline moves (pure).

Theory of operation
-------------------
A handler actor runs a streak of tasks under one cancel scope (see ``_consumer/_handlers``).
Two decisions of that loop live here, free of I/O and clocks (times come in as arguments):

*The deadline rule* (`deadline_after`): a task started at ``started`` with ``timeout`` seconds
must not be cancelled before ``started + timeout``; the scope's deadline moves (to
`DEADLINE_SLACK` after that) only when it would otherwise end the task early, so most tasks of
a quick streak leave it alone (moving it costs more than a no-op task).

*The settle rule* (`settle`): a run is settled by why it ended, in this order:

==========================  ===================================  =========================
the lease                   the run                              settled as
==========================  ===================================  =========================
lost (cancelled, taken      any way                              `Settled.LOST`: write
over, deleted)                                                   nothing
released (shutdown grace)   any way                              `Settled.RELEASED`
held                        cut short (its scope was cancelled:  a failed attempt,
                            only its deadline is left)           "timed out after N s"
held                        returned or raised                   `decide` (the outcome)
==========================  ===================================  =========================

A run cut short is keyed on the cancel being *called*, not on it being caught: a handler may
swallow the cancellation (or raise something else) and its work still did not finish.  The
caller substitutes the timeout error first (`run_error`), so the error it reports to telemetry
is the one the outcome records.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

from ._outcome import Decision, decide

if TYPE_CHECKING:
    from ._book import Lease
    from ._retry import RetryPolicy

__all__ = ["DEADLINE_SLACK", "Settled", "deadline_after", "run_error", "settle"]

#: Within a streak, a task's deadline may fall up to this much (seconds) after its start plus
#: the handler timeout, never before.
DEADLINE_SLACK = 0.001


class Settled(enum.Enum):
    """A settled run that writes no handler outcome of its own."""

    #: The lease was lost (cancelled by a client, taken over, deleted): the row already says
    #: what happened; write nothing.
    LOST = "lost"
    #: Cut short by the end of the shutdown grace, however it ended: release the task (back
    #: to pending, no attempt used).
    RELEASED = "released"


def deadline_after(current: float, started: float, timeout: float) -> float | None:
    """The streak scope's new deadline for a task started at ``started`` (None: keep
    ``current``, which is not before ``started + timeout``)."""
    deadline = started + timeout
    if current < deadline:
        return deadline + DEADLINE_SLACK
    return None


def run_error(
    error: BaseException | None, *, cut_short: bool, task_type: str, timeout: float | None
) -> BaseException | None:
    """What a run's end counts as: a run cut short by its deadline timed out, whatever the
    handler did with the cancellation; otherwise what it raised (None: it returned)."""
    if not cut_short:
        return error
    limit = math.inf if timeout is None else timeout
    return TimeoutError(f"handler for {task_type!r} timed out after {limit:g} s")


def settle(
    lease: Lease,
    error: BaseException | None,
    *,
    policy: RetryPolicy,
    message_limit: int,
) -> Decision | Settled:
    """Settle a finished run of ``lease``'s task (``error`` from `run_error`)."""
    if lease.lost:
        return Settled.LOST
    if lease.released:
        return Settled.RELEASED
    return decide(
        lease.task_id,
        lease.token,
        error,
        attempts_left=lease.attempts_left,
        attempt=lease.attempts_elapsed,
        policy=policy,
        message_limit=message_limit,
    )
