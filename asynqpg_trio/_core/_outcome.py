"""How a handler's return or exception becomes a database outcome (pure, no I/O).

Theory of operation
-------------------
`decide` maps what a handler did to one `Outcome` of the completion batch:

* returned -> complete;
* raised (anything in its ``__cause__`` chain, outermost first, decides):
  `TaskSnooze` -> snooze (attempt refunded, no message);
  `TaskSnoozeWithError` -> retry after its delay while attempts remain, else fail;
  `SkipRetry` -> fail now;
  anything else -> retry after the retry policy's delay while attempts remain, else fail.

One order serves the database write, the metrics status and the error handler alike, so they
never disagree (the Go library checks SkipRetry and snooze in different orders).  Stored
messages are bounded and storable: `format_error` keeps the exception line and the innermost
frames of the handler's own code (never this package's frames: the actor and the middleware
chain around every handler say nothing about the failure), cut to ``limit`` characters, and
escapes what a text column refuses.
"""

from __future__ import annotations

import os.path
import traceback
from dataclasses import dataclass
from datetime import timedelta

from ._batching import Outcome, OutcomeKind
from ._checks import seconds
from ._retry import RetryPolicy, clamp_delay

__all__ = [
    "Decision",
    "SkipRetry",
    "TaskSnooze",
    "TaskSnoozeWithError",
    "decide",
    "format_error",
    "handler_frames",
]

#: The most traceback frames a stored message keeps (the innermost ones).
HANDLER_FRAMES = 5
#: This package's directory (with a trailing separator): frames under it are left out.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _duration(value: float | timedelta, what: str) -> float:
    # float() first: a snooze accepts anything float() does (such as "5"), as it always has.
    delay = value if isinstance(value, timedelta) else float(value)
    return seconds(delay, f"{what} delay", allow_zero=True, error=ValueError)


class SkipRetry(Exception):
    """Raise from a handler to fail the task now, without retrying it.

    For errors no retry can fix: an invalid payload, a business rule that says no.
    """


class TaskSnooze(Exception):
    """Raise from a handler to put the task back for ``delay`` seconds without using an attempt.

    Args:
        delay: seconds (or a `timedelta`) before the task is ready again.
    """

    def __init__(self, delay: float | timedelta) -> None:
        self.delay: float = _duration(delay, "TaskSnooze")
        super().__init__(f"snoozed for {self.delay:g} s")


class TaskSnoozeWithError(Exception):
    """Raise from a handler to count a failed attempt and retry after ``delay`` seconds.

    The message is stored; when no attempt is left the task fails instead.

    Args:
        delay: seconds (or a `timedelta`) before the retry.
        message: what to record (defaults to a generic note).
    """

    def __init__(self, delay: float | timedelta, message: str = "") -> None:
        self.delay: float = _duration(delay, "TaskSnoozeWithError")
        super().__init__(message or f"snoozed with error for {self.delay:g} s")


@dataclass(slots=True)  # one per task: not frozen, which costs several times more to build
class Decision:
    """A handler run's outcome and the status reported to metrics and logs."""

    outcome: Outcome
    #: completed, failed, retried or snoozed (the Go library's bounded metric values).
    status: str
    #: The exception that made the task fail for good (for the error handler), else None.
    final_error: BaseException | None


def _marker(exc: BaseException) -> BaseException:
    """The first of our marker exceptions in the cause chain, else ``exc`` itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TaskSnooze | TaskSnoozeWithError | SkipRetry):
            return current
        seen.add(id(current))
        current = current.__cause__
    return exc


def _text(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception cannot be printed."""
    try:
        return str(exc)
    except Exception as failure:
        return f"<str() failed: {type(failure).__name__}>"


def _storable(text: str) -> str:
    """``text`` as a PostgreSQL text value can hold it: NUL characters and lone surrogates
    (which UTF-8 cannot encode) are spelt out as backslash escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def handler_frames(exc: BaseException) -> list[str]:
    """The innermost `HANDLER_FRAMES` frames of ``exc``'s traceback that are not this
    package's own (the handler actor, middleware chain and thread runner around every
    handler), formatted as `traceback` does."""
    summary = traceback.extract_tb(exc.__traceback__)
    own = [f for f in summary if not f.filename.startswith(_PACKAGE_DIR)]
    return traceback.format_list(own[-HANDLER_FRAMES:])


def format_error(exc: BaseException, limit: int) -> str:
    """The exception's type and message plus the innermost traceback frames of the handler's
    own code (`handler_frames`: this package's frames are left out), at most ``limit``
    characters (the head is kept: it says what happened).

    Whatever the exception holds, the result can be stored: an exception whose ``str()``
    raises gets a placeholder, and characters a text column refuses are escaped.
    """
    head = f"{type(exc).__name__}: {_text(exc)}"
    frames = handler_frames(exc)
    text = head if not frames else head + "\n" + "".join(frames).rstrip()
    text = _storable(text)
    if len(text) > limit:
        text = text[: max(0, limit - 15)] + " ...[truncated]"
    return text


def decide(
    task_id: int,
    lease_token: int,
    error: BaseException | None,
    *,
    attempts_left: int,
    attempt: int,
    policy: RetryPolicy,
    message_limit: int = 2048,
) -> Decision:
    """Map a handler run to its outcome.

    Args:
        task_id: the task.
        lease_token: the lease the handler ran under.
        error: what the handler raised, or None if it returned.
        attempts_left: attempts left after this one (the stored counter after the claim).
        attempt: the 1-based number of this attempt (stored ``attempts_elapsed``).
        policy: computes the back-off for ordinary errors.
        message_limit: the longest message stored.
    """
    if error is None:
        return Decision(Outcome(task_id, lease_token, OutcomeKind.COMPLETE), "completed", None)
    marker = _marker(error)
    if isinstance(marker, TaskSnooze):
        delay = clamp_delay(marker.delay)
        return Decision(
            Outcome(task_id, lease_token, OutcomeKind.SNOOZE, delay=delay), "snoozed", None
        )
    message = format_error(error, message_limit)
    if isinstance(marker, SkipRetry):
        return Decision(
            Outcome(task_id, lease_token, OutcomeKind.FAIL, message=message), "failed", error
        )
    if attempts_left < 1:
        return Decision(
            Outcome(task_id, lease_token, OutcomeKind.FAIL, message=message), "failed", error
        )
    # Clamped: a policy (or a snooze) asking for NaN, infinity or centuries must not make
    # the outcome unwritable.
    if isinstance(marker, TaskSnoozeWithError):
        delay = clamp_delay(marker.delay)
        status = "snoozed"
    else:
        delay = clamp_delay(float(policy.next_retry(attempt)))
        status = "retried"
    return Decision(
        Outcome(task_id, lease_token, OutcomeKind.RETRY, delay=delay, message=message),
        status,
        None,
    )


# Users import these from the package: tracebacks and reprs name them there.
for _signal in (SkipRetry, TaskSnooze, TaskSnoozeWithError):
    _signal.__module__ = "asynqpg_trio"
del _signal
