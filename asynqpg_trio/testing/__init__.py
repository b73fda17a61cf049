"""Test tools for code that uses asynqpg-trio: run your handlers in your own tests.

`open_harness` runs your handlers in-process with the real consumer, on a PostgreSQL database
or on `FakeDatabase`, and gives the test `Harness.enqueue`, `Harness.drain` (wait until no
task is pending or running) and `Harness.tasks` (status, attempts, messages and payload of
each task)::

    from asynqpg_trio import Task, TaskStatus
    from asynqpg_trio.testing import FakeDatabase, open_harness

    async def test_welcome_email(autojump_clock):
        async with open_harness(FakeDatabase(), handlers=handlers) as harness:
            await harness.enqueue(Task("email.send", b'{"to": "ann@example.com"}'))
            await harness.drain()
            [task] = await harness.tasks("email.send")
            assert task.status is TaskStatus.COMPLETED

`FakeDatabase` is an in-memory task table: it implements the tasks repository the consumer's
actors use and the maintenance repository (leader election, rescue of expired leases,
cleaning), changing rows only through the queue's state table, on a clock you inject (the
event loop's by default, so Trio's ``autojump_clock`` runs lease expiry, retry delays and
snoozes in virtual time).  The project's contract suite runs the same tests against it and
against PostgreSQL.
"""

from __future__ import annotations

from ._fake import EPOCH as EPOCH
from ._fake import FakeDatabase as FakeDatabase
from ._harness import FAKE_DEFAULTS as FAKE_DEFAULTS
from ._harness import HARNESS_DEFAULTS as HARNESS_DEFAULTS
from ._harness import Harness as Harness
from ._harness import open_harness as open_harness
from ._stored import FakeTask as FakeTask
from ._tables import EnqueuedTask as EnqueuedTask

__all__ = (
    "EPOCH",
    "FAKE_DEFAULTS",
    "HARNESS_DEFAULTS",
    "EnqueuedTask",
    "FakeDatabase",
    "FakeTask",
    "Harness",
    "open_harness",
)
