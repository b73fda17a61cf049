"""Sync handlers: which functions run in threads, and how their threads are bounded, timed
out and abandoned; on the fake in virtual time, and `InThreads` alone on both backends.

A worker thread runs in real time while Trio's ``autojump_clock`` jumps whenever the loop is
idle, so a test that needs the clock to stand still until a thread has started keeps the
loop busy (`spin_until`): the clock jumps only when no task is runnable.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from asynqpg_trio import (
    ConfigurationError,
    Handler,
    SkipRetry,
    TaskInfo,
    TaskMetadata,
    get_task_metadata,
    with_task_metadata,
)
from asynqpg_trio._consumer._threads import InThreads, runnable
from asynqpg_trio._core._config import is_async_callable
from asynqpg_trio._core._row import TaskStatus
from asynqpg_trio.testing import EPOCH

from .harness import TYPE, Shared, config, do_nothing, pipeline


class Blocking:
    """A sync handler that blocks its thread until ``release`` is set, counting its runs and
    the most threads it ran in at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.ended = threading.Event()
        self._lock = threading.Lock()
        self.runs = 0
        self.running = 0
        self.most = 0
        self.seen: list[TaskMetadata | None] = []

    def __call__(self, task: TaskInfo) -> None:
        with self._lock:
            self.runs += 1
            self.running += 1
            self.most = max(self.most, self.running)
            self.seen.append(get_task_metadata())
        self.started.set()
        try:
            self.release.wait(timeout=30)  # the hang guard of a broken test
        finally:
            with self._lock:
                self.running -= 1
            self.ended.set()


async def spin_until(check: Callable[[], object]) -> None:
    """Wait for a worker thread with the clock standing still (the loop never idles)."""
    deadline = time.monotonic() + 10  # a hang guard, not a measurement
    while not check():
        assert time.monotonic() < deadline, "the worker thread never got there"
        await anyio.lowlevel.checkpoint()


async def until(check: Callable[[], object]) -> None:
    """Wait for ``check`` in virtual time (for handlers without a timeout, where the clock
    may run on while a thread finishes)."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the condition never came true"
        await trio.sleep(0.5)


# -- which handlers are sync ------------------------------------------------------------------


class AsyncCallable:
    async def __call__(self, task: TaskInfo) -> None:
        pass


class SyncCallable:
    def __call__(self, task: TaskInfo) -> None:
        pass


class Service:
    async def handle(self, task: TaskInfo) -> None:
        pass

    def handle_sync(self, task: TaskInfo) -> None:
        pass


def plain(task: TaskInfo) -> None:
    pass


async def two_args(task: TaskInfo, extra: int) -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "is_async"),
    [
        (do_nothing, True),
        (functools.partial(two_args, extra=1), True),
        (AsyncCallable(), True),
        (Service().handle, True),
        (plain, False),
        (functools.partial(plain), False),
        (SyncCallable(), False),
        (Service().handle_sync, False),
        (lambda task: None, False),
    ],
)
def test_sync_or_async_is_decided_at_registration(fn: Any, is_async: bool) -> None:
    assert is_async_callable(fn) is is_async
    assert Handler(fn).is_sync is not is_async


def test_threads_defaults_to_workers_and_is_for_sync_handlers_only() -> None:
    assert Handler(plain, workers=4).thread_limit == 4
    assert Handler(plain, workers=4, threads=2).thread_limit == 2
    assert runnable(TYPE, Handler(plain, workers=4, threads=2)).limit == 2  # type: ignore[attr-defined]
    assert runnable(TYPE, Handler(do_nothing)) is do_nothing
    with pytest.raises(ConfigurationError, match="threads= is for plain"):
        Handler(do_nothing, threads=2)
    with pytest.raises(ConfigurationError, match="threads must be"):
        Handler(plain, threads=0)


def test_generator_functions_are_refused() -> None:
    def numbers(task: TaskInfo) -> Any:
        yield 1

    async def stream(task: TaskInfo) -> Any:
        yield 1

    for fn in (numbers, stream):
        with pytest.raises(ConfigurationError, match="not a generator function"):
            Handler(fn)


# -- in the pipeline, in virtual time -----------------------------------------------------


async def test_a_blocked_thread_leaves_the_loop_free_and_its_lease_renewed(
    autojump_clock: object, shared: Shared
) -> None:
    blocking = Blocking()
    task = shared.db.enqueue(TYPE)
    async with pipeline(shared, config(Handler(blocking, workers=1, timeout=None))):
        await spin_until(blocking.started.is_set)
        token = shared.db.get(task).lease_token
        await trio.sleep(300.0)  # ten leases pass while the thread blocks
        row = shared.db.get(task)
        assert (row.status, row.lease_token) == (TaskStatus.RUNNING, token)
        assert row.blocked_till > trio.current_time()  # renewed, never expired
        assert shared.counters.leases_lost == 0
        blocking.release.set()
        await until(lambda: shared.db.get(task).status is TaskStatus.COMPLETED)
    assert blocking.runs == 1
    assert blocking.seen[0] is not None and blocking.seen[0].id == task  # the context var


async def test_a_timeout_fails_the_attempt_and_the_late_return_is_discarded(
    autojump_clock: object, shared: Shared
) -> None:
    blocking = Blocking()
    task = shared.db.enqueue(TYPE, max_retry=1)
    async with pipeline(shared, config(Handler(blocking, workers=1, timeout=5.0))):
        await spin_until(blocking.started.is_set)  # the deadline cannot pass before this
        await trio.sleep(6.0)
        row = shared.db.get(task)
        assert row.status is TaskStatus.FAILED
        assert row.messages == (f"TimeoutError: handler for {TYPE!r} timed out after 5 s",)
        assert not blocking.ended.is_set()  # abandoned, still running
        blocking.release.set()
        await trio.testing.wait_all_threads_completed()
        await trio.sleep(5.0)
        assert shared.db.get(task).status is TaskStatus.FAILED  # its return changed nothing
    assert (shared.counters.completed, shared.counters.failed) == (0, 1)


async def test_a_sync_handler_returning_an_awaitable_fails_at_once(
    autojump_clock: object, shared: Shared
) -> None:
    task = shared.db.enqueue(TYPE, max_retry=3)

    def calls_async(task: TaskInfo) -> Any:  # a plain function that returns a coroutine
        return do_nothing(task)

    handler = Handler(calls_async, workers=1, timeout=None)
    async with pipeline(shared, config(handler)):
        await until(lambda: shared.db.get(task).status is TaskStatus.FAILED)
    row = shared.db.get(task)
    assert row.attempts_elapsed == 1  # no retry: calling it again cannot help
    assert row.messages[0].startswith(
        f"TypeError: the handler for {TYPE!r} is a plain function but returned coroutine,"
        " an awaitable: make it `async def`"
    )


async def test_outcomes_of_a_sync_handler_are_decided_as_for_async_ones(
    autojump_clock: object, shared: Shared
) -> None:
    def refuse(task: TaskInfo) -> None:
        raise SkipRetry("no such user")

    task = shared.db.enqueue(TYPE, max_retry=3)
    async with pipeline(shared, config(Handler(refuse, workers=1, timeout=None))):
        await until(lambda: shared.db.get(task).status is TaskStatus.FAILED)
    row = shared.db.get(task)
    assert row.attempts_elapsed == 1
    assert row.messages[0].startswith("SkipRetry: no such user")


# -- InThreads alone, on both backends ----------------------------------------------------

BACKENDS = pytest.mark.parametrize("backend", ["trio", "asyncio"])


def _info(task_id: int) -> TaskInfo:
    return TaskInfo(task_id, TYPE, b"", None, 1, 0, EPOCH, EPOCH, ())


@BACKENDS
def test_the_thread_limit_holds(backend: str) -> None:
    blocking = Blocking()
    runner = InThreads(blocking, TYPE, 2)

    async def scenario() -> None:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(runner, _info(i))
                await spin_until(lambda: blocking.running == 2)
                # The other two wait for a slot, not in a thread.
                await spin_until(lambda: runner.slots.statistics().tasks_waiting == 2)
                assert (blocking.runs, runner.slots.borrowed_tokens) == (2, 2)
                blocking.release.set()
        assert (blocking.runs, blocking.most) == (4, 2)
        assert runner.slots.borrowed_tokens == 0

    anyio.run(scenario, backend=backend)


@BACKENDS
def test_an_abandoned_thread_keeps_its_slot_until_it_ends(backend: str) -> None:
    blocking = Blocking()
    runner = InThreads(blocking, TYPE, 1)
    after: list[str] = []

    def second(task: TaskInfo) -> str:
        return "ran"

    async def scenario() -> None:
        with anyio.fail_after(20):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(runner, _info(1))
                    await spin_until(blocking.started.is_set)
                    scope.cancel()  # the timeout, say: the call ends, the thread runs on
            assert not blocking.ended.is_set()
            assert runner.slots.borrowed_tokens == 1
            runner.fn = second  # the next call, once it has a slot

            async def call() -> None:
                after.append(await runner(_info(2)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await spin_until(lambda: runner.slots.statistics().tasks_waiting == 1)
                blocking.release.set()  # the abandoned thread ends and frees its slot
        assert after == ["ran"]
        assert runner.slots.borrowed_tokens == 0

    anyio.run(scenario, backend=backend)


@BACKENDS
def test_the_task_metadata_reaches_the_thread(backend: str) -> None:
    runner = InThreads(lambda task: get_task_metadata(), TYPE, 1)
    meta = TaskMetadata(id=7, retry_count=1, max_retry=3, created_at=EPOCH)

    async def scenario() -> Any:
        with with_task_metadata(meta):
            return await runner(_info(7))

    assert anyio.run(scenario, backend=backend) == meta
