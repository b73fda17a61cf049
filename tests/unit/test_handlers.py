"""Handler actors on the fake, in virtual time: timeouts and retry back-off."""

from __future__ import annotations

import trio

from asynqpg_trio import Handler, TaskInfo
from asynqpg_trio._core._adaptive import MAX_FLUSH_DELAY
from asynqpg_trio._core._row import TaskStatus

from .harness import TYPE, Shared, config, pipeline


class Backoff:
    """A retry policy whose delay grows with each attempt (and records what it was asked)."""

    def __init__(self, *delays: float) -> None:
        self.delays = delays
        self.asked: list[int] = []

    def next_retry(self, attempt: int) -> float:
        """The delay after ``attempt`` failed."""
        self.asked.append(attempt)
        return self.delays[min(attempt, len(self.delays)) - 1]


async def test_a_30_s_timeout_is_a_failed_attempt_in_virtual_time(
    autojump_clock: object, shared: Shared
) -> None:
    async def hang(task: TaskInfo) -> None:
        await trio.sleep_forever()

    task = shared.db.enqueue(TYPE, max_retry=2)
    cfg = config(Handler(hang, workers=1, timeout=30.0))
    started = trio.current_time()
    async with pipeline(shared, cfg, Backoff(10.0)):
        await trio.sleep(29.0)
        assert shared.db.get(task).status is TaskStatus.RUNNING  # its lease renewed
        await trio.sleep(2.0)
        row = shared.db.get(task)
        assert row.status is TaskStatus.PENDING
        assert row.messages == (f"TimeoutError: handler for {TYPE!r} timed out after 30 s",)
        assert (row.attempts_left, row.attempts_elapsed) == (1, 1)
        assert row.blocked_till - started > 30 + 10 - 0.001
        await trio.sleep(45.0)  # the second attempt times out too: no attempt left
        row = shared.db.get(task)
        assert row.status is TaskStatus.FAILED
        assert len(row.messages) == 2


async def test_retries_back_off_as_the_policy_says(autojump_clock: object, shared: Shared) -> None:
    runs: list[float] = []

    async def flaky(task: TaskInfo) -> None:
        runs.append(trio.current_time())
        raise ValueError(f"attempt {len(runs)}")

    task = shared.db.enqueue(TYPE, max_retry=3)
    policy = Backoff(5.0, 20.0)
    async with pipeline(shared, config(Handler(flaky, workers=1)), policy):
        await trio.sleep(60.0)
    row = shared.db.get(task)
    assert row.status is TaskStatus.FAILED
    firsts = [m.splitlines()[0] for m in row.messages]  # each with its traceback
    assert firsts == ["ValueError: attempt 1", "ValueError: attempt 2", "ValueError: attempt 3"]
    assert policy.asked == [1, 2]
    first, second, third = runs
    # A retry is written when its batch is flushed (adaptive: at most MAX_FLUSH_DELAY).
    batch_interval = config().batch_interval
    if batch_interval is None:
        batch_interval = MAX_FLUSH_DELAY
    assert 5 <= second - first <= 5 + batch_interval + 0.01
    assert 20 <= third - second <= 20 + batch_interval + 0.01


async def test_a_completed_task_is_written_once_the_batch_is_due(
    autojump_clock: object, shared: Shared
) -> None:
    ids = [shared.db.enqueue(TYPE) for _ in range(3)]
    async with pipeline(shared, config()):
        await trio.sleep(1.0)
    assert [shared.db.get(i).status for i in ids] == [TaskStatus.COMPLETED] * 3
    assert shared.counters.completed == 3
    assert not shared.book.leases
