"""Fixtures of the actor unit tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .harness import Shared

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def shared() -> Iterator[Shared]:
    """The shared objects of one consumer, on a fresh `FakeDatabase` (closed afterwards)."""
    s = Shared()
    yield s
    s.wakeup.close()
