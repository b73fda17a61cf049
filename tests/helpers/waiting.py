"""The one way an integration test waits for a condition it cannot be told about.

The integration tests run a real consumer (or elector) against real PostgreSQL, where some
things become true at a moment no test controls and no event reports: a count in
`Consumer.statistics`, a row's status, an elected leader.  `wait_until` polls for them on the
event loop's clock and fails the test, naming what it waited for, when the condition is late.
Logic that can be driven step by step (the pure core, the pool's clock) is tested under
Trio's ``autojump_clock`` instead, with no polling and no real time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["wait_until"]


async def wait_until(
    check: Callable[[], object],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> float:
    """Poll ``check`` every ``interval`` seconds until it returns something true.

    Returns:
        The seconds (loop clock) it took, for tests that bound how long something takes;
        as precise as ``interval``.

    Fails the test after ``timeout`` seconds.
    """
    start = anyio.current_time()
    with anyio.move_on_after(timeout):
        while not check():
            await anyio.sleep(interval)
        return anyio.current_time() - start
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
