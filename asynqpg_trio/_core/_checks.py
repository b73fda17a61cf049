"""Argument checks shared by every settings and task constructor (pure core).

Theory of operation
-------------------
One home for the three checks the package makes of user input: a duration (`seconds`), a
count (`count`) and text a PostgreSQL ``text`` column can hold (`storable`).  Each caller
passes the error class its API documents (`ConfigurationError` for settings, `InvalidTask`
for tasks, `ValueError` for outcome exceptions), so one wording serves every caller and the
error types stay what they were.  No I/O, no clock.
"""

from __future__ import annotations

import math
from datetime import timedelta

from ._errors import ConfigurationError

__all__ = ["count", "seconds", "storable"]


def seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = False,
    error: type[Exception] = ConfigurationError,
) -> float:
    """A finite number of seconds (an int, a float or a `timedelta`): positive, or with
    ``allow_zero`` non-negative.

    Raises:
        error: ``value`` is not a number of seconds (a bool is not), or out of range.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise error(f"{name} must be seconds or a timedelta, got {value!r}")
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise error(f"{name} must be a finite, {bound} duration, got {value!r}")
    return result


def count(
    value: object,
    name: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    error: type[Exception] = ConfigurationError,
) -> int:
    """An int (not a bool) from ``minimum`` to ``maximum`` (None: no upper bound).

    Raises:
        error: ``value`` is not such an int.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        if maximum is None:
            raise error(f"{name} must be an int >= {minimum}, got {value!r}")
        raise error(f"{name} must be an int between {minimum} and {maximum}, got {value!r}")
    return value


def storable(text: str) -> bool:
    """Whether a PostgreSQL ``text`` column can hold ``text``: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
