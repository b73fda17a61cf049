"""`asynqpg_trio.testing.open_harness`: the users' handlers run in-process, on the fake in
virtual time (Trio's ``autojump_clock``) and on real PostgreSQL (real time, no autojump: the
clock would jump while a query waits on its socket)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio

from asynqpg_trio import (
    ConfigurationError,
    ConstantRetryPolicy,
    DuplicateTask,
    Handler,
    InvalidTask,
    SkipRetry,
    Task,
    TaskInfo,
    TaskSnooze,
    TaskStatus,
    Unique,
    get_task_metadata,
    report_progress,
)
from asynqpg_trio.testing import EPOCH, FakeDatabase, Harness, open_harness


class Flaky:
    """Fails its first ``failures`` attempts of each task, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs: list[tuple[int, float]] = []

    async def __call__(self, task: TaskInfo) -> None:
        self.runs.append((task.id, trio.current_time()))
        if task.attempts_elapsed < self.failures:
            raise ConnectionError(f"attempt {task.attempts_elapsed + 1}: smtp down")


async def test_retries_back_off_in_virtual_time(autojump_clock: object) -> None:
    flaky = Flaky(2)
    async with open_harness(FakeDatabase(), handlers={"email": flaky}) as harness:
        task_id = await harness.enqueue(Task("email", b'{"to": "ann"}'))
        await harness.drain()
        [task] = await harness.tasks("email")
    assert (task.id, task.status, task.attempts_elapsed) == (task_id, TaskStatus.COMPLETED, 3)
    assert [m.splitlines()[0] for m in task.messages] == [
        "ConnectionError: attempt 1: smtp down",
        "ConnectionError: attempt 2: smtp down",
    ]
    assert task.json() == {"to": "ann"}
    # The default policy waits attempt**4 s (+-10 %): 1 s, then 16 s, none of it real.
    (_, first), (_, second), (_, third) = flaky.runs
    assert 0.9 <= second - first <= 1.2
    assert 14.4 <= third - second <= 17.7


async def test_drain_jumps_over_snoozes_and_delays(autojump_clock: object) -> None:
    snoozed: set[int] = set()

    async def handle(task: TaskInfo) -> None:
        if task.id not in snoozed:
            snoozed.add(task.id)
            raise TaskSnooze(timedelta(hours=1))

    db = FakeDatabase()
    async with open_harness(db, handlers={"report": handle}) as harness:
        await harness.enqueue_many(
            [
                Task("report", b"now"),
                Task("report", b"later", delay=timedelta(hours=2)),
                Task("report", b"at", process_at=EPOCH + timedelta(hours=3)),
            ]
        )
        await harness.drain()
        done = await harness.tasks(status="completed")
    assert [t.payload for t in done] == [b"now", b"later", b"at"]
    assert all(t.attempts_elapsed == 1 for t in done)  # a snooze gives its attempt back
    assert trio.current_time() >= 4 * 3600  # "at" snoozed an hour too


async def test_sync_handlers_run_on_the_fake_with_their_metadata(autojump_clock: object) -> None:
    seen: list[tuple[int | None, int]] = []

    def handle(task: TaskInfo) -> None:  # a plain function
        meta = get_task_metadata()
        assert meta is not None
        seen.append((meta.id, meta.retry_count))
        if task.payload == b"bad":
            raise SkipRetry("bad payload")

    handlers = {"sync": Handler(handle, workers=2, threads=1)}
    async with open_harness(FakeDatabase(), handlers=handlers) as harness:
        ok, bad = await harness.enqueue_many([Task("sync", b"ok"), Task("sync", b"bad")])
        await harness.drain()
        by_id = {t.id: t for t in await harness.tasks()}
    assert sorted(seen, key=str) == sorted([(ok, 0), (bad, 0)], key=str)
    assert by_id[ok].status is TaskStatus.COMPLETED  # type: ignore[index]
    assert by_id[bad].status is TaskStatus.FAILED  # type: ignore[index]
    assert by_id[bad].messages[0].startswith("SkipRetry: bad payload")  # type: ignore[index]


async def test_results_and_progress_on_the_fake(autojump_clock: object) -> None:
    async def handle(task: TaskInfo) -> Any:
        assert report_progress(0.5, "half")
        await trio.sleep(1)
        assert report_progress(0.9, "nearly")
        return b"raw" if task.payload == b"bytes" else {"echo": task.payload.decode()}

    db = FakeDatabase()
    async with open_harness(db, handlers={"t": handle}) as harness:
        raw, js = await harness.enqueue_many([Task("t", b"bytes"), Task("t", b"json")])
        await harness.drain()
        by_id = {t.id: t for t in await harness.tasks()}
    assert by_id[raw].result == b"raw"  # type: ignore[index]
    assert by_id[js].result == {"echo": "json"}  # type: ignore[index]
    stored = db.get(js)  # type: ignore[arg-type]
    assert (stored.result, stored.progress, stored.progress_note) == (
        {"echo": "json"},
        0.9,
        "nearly",
    )


async def test_drain_waits_for_follow_up_tasks_and_timeouts(autojump_clock: object) -> None:
    holder: list[Harness] = []

    async def order(task: TaskInfo) -> None:
        await holder[0].enqueue(Task("invoice", task.payload, delay=60))

    async def invoice(task: TaskInfo) -> None:
        await trio.sleep_forever()  # hangs: its 5 s timeout fails each attempt

    handlers: dict[str, Any] = {
        "order": order,
        "invoice": Handler(invoice, timeout=5),
    }
    async with open_harness(
        FakeDatabase(), handlers=handlers, retry_policy=ConstantRetryPolicy(10)
    ) as harness:
        holder.append(harness)
        await harness.enqueue(Task("order", b"42"))
        await harness.drain()
        tasks = await harness.tasks()
    assert [(t.type, t.status, t.attempts_elapsed) for t in tasks] == [
        ("order", TaskStatus.COMPLETED, 1),
        ("invoice", TaskStatus.FAILED, 3),
    ]
    assert tasks[1].messages[0] == "TimeoutError: handler for 'invoice' timed out after 5 s"
    assert harness.consumer.statistics().failed == 1


async def test_tasks_of_other_types_are_left_alone(autojump_clock: object) -> None:
    async def handle(task: TaskInfo) -> None:
        pass

    async with open_harness(FakeDatabase(), handlers={"mine": handle}) as harness:
        await harness.enqueue_many([Task("mine", b""), Task("theirs", b"")])
        await harness.drain()
        assert [t.status for t in await harness.tasks("theirs")] == [TaskStatus.PENDING]
        assert [t.status for t in await harness.tasks("mine")] == [TaskStatus.COMPLETED]
    with pytest.raises(RuntimeError, match="after the harness's block ended"):
        await harness.drain()


async def test_the_harness_checks_what_it_is_given() -> None:
    async def handle(task: TaskInfo) -> None:
        pass

    with pytest.raises(TypeError, match="'no_such_option'"):
        async with open_harness(FakeDatabase(), handlers={"t": handle}, no_such_option=1):
            pass
    with pytest.raises(ConfigurationError, match="maintenance needs PostgreSQL"):
        async with open_harness(FakeDatabase(), handlers={"t": handle}, maintenance=True):
            pass
    with pytest.raises(ConfigurationError, match="poll_interval"):
        async with open_harness(FakeDatabase(), handlers={"t": handle}, poll_interval=-1):
            pass
    async with open_harness(FakeDatabase(), handlers={"t": handle}) as harness:
        with pytest.raises(InvalidTask):
            await harness.enqueue_many([Task("t", b""), Task("", b"")])
        assert await harness.tasks() == []  # nothing of a bad batch is enqueued
        await harness.enqueue(Task("t", b"", idempotency_token="once"))
        assert await harness.enqueue_many([Task("t", b"", idempotency_token="once")]) == [None]


async def test_on_postgres_with_a_sync_handler_in_a_thread(dsn: str) -> None:
    attempts: dict[int, int] = {}

    def resize(task: TaskInfo) -> None:
        attempts[task.id] = attempts.get(task.id, 0) + 1
        if task.payload == b"corrupt":
            raise SkipRetry("not an image")
        if attempts[task.id] == 1:
            raise OSError("disk busy")

    async with open_harness(
        dsn, handlers={"resize": resize}, retry_policy=ConstantRetryPolicy(0.05)
    ) as harness:
        ids = await harness.enqueue_many([Task("resize", b"a.png"), Task("resize", b"corrupt")])
        with trio.fail_after(30):
            await harness.drain()
        tasks = await harness.tasks("resize")
    assert [(t.id, t.payload, t.status, t.attempts_elapsed) for t in tasks] == [
        (ids[0], b"a.png", TaskStatus.COMPLETED, 2),
        (ids[1], b"corrupt", TaskStatus.FAILED, 1),
    ]
    assert tasks[0].messages[0].startswith("OSError: disk busy")
    assert tasks[0].result is None  # the handler returned None
    assert tasks[1].messages[0].startswith("SkipRetry: not an image")


async def test_the_fake_keeps_unique_tasks_unique(autojump_clock: object) -> None:
    db = FakeDatabase()
    ran: list[bytes] = []

    async def handle(task: TaskInfo) -> None:
        ran.append(task.payload)
        if task.payload == b"bad":
            raise SkipRetry("no")

    hourly = Unique(period=3600)
    async with open_harness(db, handlers={"r": handle}) as harness:
        first = await harness.enqueue(Task("r", b"a", unique=Unique()))
        with pytest.raises(DuplicateTask) as caught:
            await harness.enqueue(Task("r", b"a", unique=Unique()))
        assert (caught.value.existing_id, caught.value.token) == (first, None)
        assert caught.value.unique_key is not None and caught.value.unique_key.startswith("sha256:")
        # Batches get None in a duplicate's place; another type or payload is another slot.
        ids = await harness.enqueue_many(
            [
                Task("r", b"a", unique=Unique()),
                Task("r", b"b", unique=Unique()),
                Task("s", b"a", unique=Unique()),
                Task("r", b"bad", unique=Unique("k")),
                Task("r", b"other payload, same key", unique=Unique("k")),
            ]
        )
        assert ids[0] is None and ids[4] is None and None not in ids[1:4]
        await harness.drain()  # completes a and b; "bad" fails
        # Completed and failed no longer hold the default states' keys.
        again = await harness.enqueue(Task("r", b"a", unique=Unique()))
        assert again != first
        # A period: one per clock hour of the fake's clock.
        hour = await harness.enqueue(Task("r", b"h", unique=hourly, delay=timedelta(days=1)))
        with pytest.raises(DuplicateTask):
            await harness.enqueue(Task("r", b"h", unique=hourly))
        await trio.sleep(3600)
        later = await harness.enqueue(Task("r", b"h", unique=hourly, delay=timedelta(days=1)))
        assert later != hour
    # An operator's retry of the failed task is refused while another holds its key.
    (bad,) = [t for t in db.rows() if t.payload == b"bad"]
    assert bad.status is TaskStatus.FAILED
    db.enqueue("r", b"holder", unique=Unique("k"))
    with pytest.raises(DuplicateTask):
        db.retry(bad.id)
    assert db.get(bad.id).status is TaskStatus.FAILED
