"""Test doubles for code that uses asynqpg-trio: `FakeDatabase`, an in-memory task table.

`FakeDatabase` implements the tasks repository the consumer's actors use and the maintenance
repository (leader election, rescue of expired leases, cleaning), changing rows only through
the queue's state table, on a clock you inject (the event loop's by default, so Trio's
``autojump_clock`` runs lease expiry, leadership terms and retry delays in virtual time).  The
project's contract suite runs the same tests against it and against PostgreSQL.
"""

from __future__ import annotations

from ._fake import EPOCH as EPOCH
from ._fake import FakeDatabase as FakeDatabase
from ._stored import FakeTask as FakeTask

__all__ = ("EPOCH", "FakeDatabase", "FakeTask")
