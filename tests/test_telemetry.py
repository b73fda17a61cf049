"""OpenTelemetry: every instrument, attribute value and span, with the SDK's in-memory metric
reader and span exporter, and the trace that crosses the queue from producer to consumer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asynqpg_trio import (
    Client,
    ConstantRetryPolicy,
    DuplicateTask,
    Handler,
    InvalidTask,
    Pool,
    Producer,
    SkipRetry,
    Task,
    TaskInfo,
    TaskNotFound,
    TaskSnooze,
    TaskSnoozeWithError,
    Unique,
    open_consumer,
    sync,
)
from asynqpg_trio._telemetry._telemetry import Telemetry

from .helpers.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

FAST: dict[str, Any] = {"poll_interval": 0.2, "maintenance": False, "batch_interval": 0.01}
STATUSES = {"completed", "failed", "retried", "snoozed", "cancelled"}
ERROR_TYPES = {"handler_error", "timeout", "db_error"}


@dataclass
class Otel:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    @property
    def providers(self) -> dict[str, Any]:
        return {"meter_provider": self.meter_provider, "tracer_provider": self.tracer_provider}

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "asynqpg"
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def value(self, name: str, **attrs: str) -> float:
        """Sum (or histogram count) over the points whose attributes include ``attrs``."""
        total = 0.0
        for p in self.points(name):
            if attrs.items() <= dict(p.attributes).items():
                total += p.count if hasattr(p, "count") else p.value
        return total

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(reader, exporter, meter_provider, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- producer -----------------------------------------------------------------------------


async def test_enqueue_span_and_metrics(pool: Pool, otel: Otel, sync_conn: Any) -> None:
    producer = Producer(pool, **otel.providers)
    task_id = await producer.enqueue(Task("mail", b"", delay=60))
    (span,) = otel.spans("asynqpg.enqueue")
    assert span.kind is SpanKind.PRODUCER
    assert attrs(span) == {"task_type": "mail", "has_delay": True, "task_id": task_id}
    assert span.status.status_code is StatusCode.UNSET
    assert otel.value("asynqpg.tasks.enqueued", task_type="mail") == 1
    assert otel.value("asynqpg.task.enqueue_duration", task_type="mail") == 1
    (point,) = otel.points("asynqpg.task.enqueue_duration")
    assert point.sum > 0
    metric = otel.metrics()["asynqpg.task.enqueue_duration"]
    assert metric.unit == "s"
    await producer.enqueue(Task("mail", b""))
    assert attrs(otel.spans("asynqpg.enqueue")[1])["has_delay"] is False


async def test_enqueue_many_counts_each_type_of_a_mixed_batch(pool: Pool, otel: Otel) -> None:
    producer = Producer(pool, **otel.providers)
    # No token: every task is inserted and counted under its own type.
    await producer.enqueue_many([Task(t, b"") for t in ("a", "b", "b", "a", "c", "b")])
    assert otel.value("asynqpg.tasks.enqueued", task_type="a") == 2
    assert otel.value("asynqpg.tasks.enqueued", task_type="b") == 3
    assert otel.value("asynqpg.tasks.enqueued", task_type="c") == 1
    # Unique tasks: the duplicate is not counted.
    ids = await producer.enqueue_many(
        [Task("u", b"1", unique=Unique()), Task("u", b"1", unique=Unique()), Task("c", b"")]
    )
    assert ids[1] is None
    assert otel.value("asynqpg.tasks.enqueued", task_type="u") == 1
    assert otel.value("asynqpg.tasks.enqueued", task_type="c") == 2


async def test_enqueue_many_counts_inserted_rows_only(pool: Pool, otel: Otel) -> None:
    producer = Producer(pool, **otel.providers)
    tasks = [Task("a", b"", idempotency_token="x"), Task("a", b"", idempotency_token="x")]
    tasks += [Task("b", b""), Task("b", b"")]
    ids = await producer.enqueue_many(tasks)
    assert ids[1] is None
    assert otel.value("asynqpg.tasks.enqueued", task_type="a") == 1  # the duplicate is not
    assert otel.value("asynqpg.tasks.enqueued", task_type="b") == 2
    # The duration is recorded once per type of the batch.
    assert otel.value("asynqpg.task.enqueue_duration", task_type="a") == 1
    assert otel.value("asynqpg.task.enqueue_duration", task_type="b") == 1
    (span,) = otel.spans("asynqpg.enqueue_many")
    assert span.kind is SpanKind.PRODUCER
    assert attrs(span) == {"batch_size": 4}
    # Inside the caller's transaction too (the Go library's EnqueueManyTx had no span).
    async with pool.connection() as conn, conn.transaction():
        await producer.enqueue_many([Task("a", b"")], conn=conn)
    assert len(otel.spans("asynqpg.enqueue_many")) == 2
    assert otel.value("asynqpg.tasks.enqueued", task_type="a") == 2


async def test_enqueue_database_failure_is_a_db_error(pool: Pool, otel: Otel) -> None:
    producer = Producer(pool, **otel.providers)
    async with pool.connection() as conn:
        await conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await producer.enqueue_many([Task("a", b""), Task("a", b""), Task("b", b"")], conn=conn)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await producer.enqueue(Task("c", b""), conn=conn)
        await conn.execute("ROLLBACK")
    assert otel.value("asynqpg.tasks.errors", task_type="a", error_type="db_error") == 2
    assert otel.value("asynqpg.tasks.errors", task_type="b", error_type="db_error") == 1
    assert otel.value("asynqpg.tasks.errors", task_type="c", error_type="db_error") == 1
    assert otel.points("asynqpg.tasks.enqueued") == []
    (many,) = otel.spans("asynqpg.enqueue_many")
    (one,) = otel.spans("asynqpg.enqueue")
    assert many.status.status_code is StatusCode.ERROR
    assert many.status.description == "batch enqueue failed"
    assert one.status.description == "enqueue failed"
    assert "task_id" not in attrs(one)
    assert any(e.name == "exception" for e in one.events)


async def test_duplicate_and_invalid_tasks(pool: Pool, otel: Otel) -> None:
    producer = Producer(pool, **otel.providers)
    await producer.enqueue(Task("a", b"", idempotency_token="t"))
    with pytest.raises(DuplicateTask):
        await producer.enqueue(Task("a", b"", idempotency_token="t"))
    # A duplicate is an answer, not a database failure: the call's span fails, no db_error.
    assert otel.points("asynqpg.tasks.errors") == []
    assert otel.value("asynqpg.tasks.enqueued", task_type="a") == 1
    assert otel.spans("asynqpg.enqueue")[1].status.status_code is StatusCode.ERROR
    # Invalid tasks are refused before any span or metric.
    with pytest.raises(InvalidTask):
        await producer.enqueue(Task("", b""))
    with pytest.raises(InvalidTask):
        await producer.enqueue_many([Task("a", b""), Task("a", "text")])  # type: ignore[arg-type]
    assert len(otel.exporter.get_finished_spans()) == 2


def test_sync_enqueue_has_spans_metrics_and_trace(otel: Otel, sync_conn: Any) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        task_id = sync.enqueue(sync_conn, Task("s", b""), **otel.providers)
        sync.enqueue_many(sync_conn, [Task("s", b"")] * 2, **otel.providers)
    (one,) = otel.spans("asynqpg.enqueue")
    (many,) = otel.spans("asynqpg.enqueue_many")
    assert attrs(one)["task_id"] == task_id and attrs(many) == {"batch_size": 2}
    assert one.parent is not None and one.parent.span_id == request.get_span_context().span_id
    assert otel.value("asynqpg.tasks.enqueued", task_type="s") == 3
    stored = [
        r[0] for r in sync_conn.execute("SELECT trace_context FROM asynqpg_tasks ORDER BY id")
    ]
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert all(trace_id in c["traceparent"] for c in stored)
    assert f"{one.context.span_id:016x}" in stored[0]["traceparent"]
    assert f"{many.context.span_id:016x}" in stored[1]["traceparent"]


async def test_no_tracer_stores_the_callers_context_or_nothing(
    pool: Pool, otel: Otel, sync_conn: Any
) -> None:
    # No tracer of ours (the global no-op): the caller's current span is still propagated.
    producer = Producer(pool, meter_provider=otel.meter_provider)
    await producer.enqueue(Task("n", b""))
    with otel.tracer_provider.get_tracer("app").start_as_current_span("request") as request:
        await producer.enqueue(Task("n", b""))
    rows = [r[0] for r in sync_conn.execute("SELECT trace_context FROM asynqpg_tasks ORDER BY id")]
    assert rows[0] is None
    assert f"{request.get_span_context().span_id:016x}" in rows[1]["traceparent"]


# -- consumer -----------------------------------------------------------------------------


async def test_every_outcome_status_error_type_and_process_span(pool: Pool, otel: Otel) -> None:
    producer = Producer(pool)
    payloads = {
        b"ok": 3,
        b"skip": 3,
        b"error": 3,
        b"error-last": 1,
        b"snooze": 3,
        b"snooze-err": 3,
        b"slow": 3,
    }
    ids = await producer.enqueue_many([Task("t", p, max_retry=n) for p, n in payloads.items()])
    by_id = dict(zip(ids, payloads, strict=True))
    seen_spans: dict[bytes, int] = {}

    async def handle(task: TaskInfo) -> None:
        seen_spans[task.payload] = trace.get_current_span().get_span_context().span_id
        if task.payload == b"skip":
            raise SkipRetry("no")
        if task.payload.startswith(b"error"):
            raise ValueError("boom")
        if task.payload == b"snooze":
            raise TaskSnooze(600)
        if task.payload == b"snooze-err":
            raise TaskSnoozeWithError(600, "later")
        if task.payload == b"slow":
            await anyio.sleep_forever()

    async with open_consumer(
        pool,
        handlers={"t": Handler(handle, timeout=0.3)},
        retry_policy=ConstantRetryPolicy(600),
        **otel.providers,
        **FAST,
    ) as consumer:
        await wait_until(lambda: sum(_written(consumer.statistics())) == 7)

    value = otel.value
    assert value("asynqpg.tasks.processed", task_type="t", status="completed") == 1
    assert value("asynqpg.tasks.processed", task_type="t", status="failed") == 2
    assert value("asynqpg.tasks.processed", task_type="t", status="retried") == 2
    assert value("asynqpg.tasks.processed", task_type="t", status="snoozed") == 2
    for status in ("completed", "failed", "retried", "snoozed"):
        assert value("asynqpg.task.duration", status=status) == value(
            "asynqpg.tasks.processed", status=status
        )
    # Snoozes are not errors; a snooze with error is; only the deadline is a timeout.
    assert value("asynqpg.tasks.errors", task_type="t", error_type="handler_error") == 4
    assert value("asynqpg.tasks.errors", task_type="t", error_type="timeout") == 1
    slow = [p for p in otel.points("asynqpg.task.duration") if p.attributes["status"] == "retried"]
    assert sum(p.max for p in slow) >= 0.3
    (in_flight,) = otel.points("asynqpg.tasks.in_flight")
    assert dict(in_flight.attributes) == {"task_type": "t"} and in_flight.value == 0
    assert otel.metrics()["asynqpg.task.duration"].unit == "s"
    _assert_bounded(otel)

    spans = {by_id[attrs(s)["task_id"]]: s for s in otel.spans("asynqpg.process")}
    assert set(spans) == set(payloads)
    for payload, span in spans.items():
        assert span.kind is SpanKind.CONSUMER
        assert attrs(span)["task_type"] == "t" and attrs(span)["attempt"] == 1
        assert span.context.span_id == seen_spans[payload]  # current inside the handler
        assert span.parent is None  # nothing stored: a new root
        failed = payload not in {b"ok", b"snooze"}
        assert (span.status.status_code is StatusCode.ERROR) is failed, payload
        if failed:
            assert span.status.description == "task processing failed"
    assert attrs(spans[b"snooze"])["status"] == "snoozed"


def _written(stats: Any) -> tuple[int, ...]:
    return (stats.completed, stats.failed, stats.retried, stats.snoozed)


def _assert_bounded(otel: Otel) -> None:
    """Every task series has a task_type (no attribute-less zero series) and bounded values."""
    for name in ("processed", "errors", "enqueued", "in_flight"):
        for p in otel.points(f"asynqpg.tasks.{name}"):
            assert "task_type" in p.attributes
            assert p.attributes.get("status", "completed") in STATUSES
            assert p.attributes.get("error_type", "timeout") in ERROR_TYPES


async def test_remote_cancel_is_cancelled_not_a_timeout(pool: Pool, otel: Otel) -> None:
    task_id = await Producer(pool).enqueue(Task("long", b""))
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        await anyio.sleep_forever()

    client = Client(pool, **otel.providers)
    async with open_consumer(pool, handlers={"long": handle}, **otel.providers, **FAST) as consumer:
        await started.wait()
        await client.cancel_task(task_id)
        await wait_until(lambda: consumer.statistics().cancelled == 1)
    assert otel.value("asynqpg.tasks.processed", task_type="long", status="cancelled") == 1
    assert otel.value("asynqpg.task.duration", status="cancelled") == 1
    assert otel.points("asynqpg.tasks.errors") == []
    (span,) = otel.spans("asynqpg.process")
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span)["status"] == "cancelled"
    (cancel,) = otel.spans("asynqpg.cancel_task")
    assert cancel.kind is SpanKind.CLIENT and attrs(cancel) == {"task_id": task_id}


async def test_release_at_shutdown_is_not_processed(pool: Pool, otel: Otel) -> None:
    await Producer(pool).enqueue(Task("h", b""))
    started = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        started.set()
        await anyio.sleep_forever()

    async with open_consumer(
        pool, handlers={"h": handle}, shutdown_timeout=0, **otel.providers, **FAST
    ):
        await started.wait()
    assert otel.points("asynqpg.tasks.processed") == []
    assert otel.points("asynqpg.tasks.in_flight")[0].value == 0
    (span,) = otel.spans("asynqpg.process")
    assert attrs(span)["status"] == "released"


async def test_trace_crosses_the_queue(pool: Pool, otel: Otel, sync_conn: Any) -> None:
    producer = Producer(pool, **otel.providers)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        task_id = await producer.enqueue(Task("j", b""))
    (enqueue,) = otel.spans("asynqpg.enqueue")
    stored = sync_conn.execute(
        "SELECT trace_context FROM asynqpg_tasks WHERE id = %s", (task_id,)
    ).fetchone()[0]
    assert set(stored) == {"traceparent"}
    trace_id = request.get_span_context().trace_id
    assert stored["traceparent"].startswith(f"00-{trace_id:032x}-{enqueue.context.span_id:016x}-")
    runs: list[int] = []

    async def handle(task: TaskInfo) -> None:
        runs.append(trace.get_current_span().get_span_context().trace_id)
        if len(runs) == 1:
            raise ValueError("first attempt fails")

    with tracer.start_as_current_span("consumer-startup"):  # not the tasks' parent
        async with open_consumer(
            pool,
            handlers={"j": handle},
            retry_policy=ConstantRetryPolicy(0),
            **otel.providers,
            **FAST,
        ) as consumer:
            await wait_until(lambda: consumer.statistics().completed == 1)
    first, second = sorted(otel.spans("asynqpg.process"), key=lambda s: attrs(s)["attempt"])
    for attempt, span in enumerate((first, second), start=1):
        assert attrs(span)["attempt"] == attempt
        assert span.context.trace_id == trace_id  # one trace, enqueue to every attempt
        assert span.parent is not None and span.parent.span_id == enqueue.context.span_id
        assert span.parent.is_remote
    assert runs == [trace_id, trace_id]
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request.get_span_context().span_id


async def test_malformed_stored_context_starts_a_new_trace(
    pool: Pool, otel: Otel, sync_conn: Any
) -> None:
    sync_conn.execute(
        "INSERT INTO asynqpg_tasks (type, payload, blocked_till, attempts_left, trace_context)"
        " VALUES ('m', '', now(), 1, %s), ('m', '', now(), 1, %s)",
        (json.dumps({"traceparent": "garbage"}), json.dumps([1, 2])),
    )

    async def handle(task: TaskInfo) -> None:
        pass

    async with open_consumer(pool, handlers={"m": handle}, **otel.providers, **FAST) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 2)
    assert [s.parent for s in otel.spans("asynqpg.process")] == [None, None]


async def test_stale_acks_takeovers_and_completer_metrics(
    pool: Pool, otel: Otel, sync_conn: Any
) -> None:
    stale_id = await Producer(pool).enqueue(Task("s", b"stale"))
    # A task whose consumer died: running with an expired lease, taken over by the claim.
    sync_conn.execute(
        "INSERT INTO asynqpg_tasks (type, payload, status, blocked_till, attempts_left,"
        " attempts_elapsed, lease_token, lease_owner)"
        " VALUES ('s', 'dead', 'running', now() - interval '1 minute', 2, 1,"
        " nextval('asynqpg_lease_token_seq'), 'dead-consumer')"
    )

    async def handle(task: TaskInfo) -> None:
        if task.id == stale_id:  # another consumer takes this lease over meanwhile
            sync_conn.execute(
                "UPDATE asynqpg_tasks SET lease_token = nextval('asynqpg_lease_token_seq'),"
                " lease_owner = 'other' WHERE id = %s",
                (task.id,),
            )

    async with open_consumer(
        pool,
        handlers={"s": handle},
        cancel_check_interval=60,
        lease_duration=300,
        **otel.providers,
        **FAST,
    ) as consumer:
        await wait_until(lambda: consumer.statistics().stale_acks == 1)
        await wait_until(lambda: consumer.statistics().completed == 1)
    assert otel.value("asynqpg.tasks.stale_acks", task_type="s") == 1
    assert otel.value("asynqpg.tasks.lease_takeovers", task_type="s") == 1
    sizes = otel.points("asynqpg.completer.batch_size")[0]
    assert sizes.sum == 2 and sizes.count >= 1
    flush = otel.points("asynqpg.completer.flush_duration")[0]
    assert flush.count == sizes.count and flush.sum > 0
    assert otel.metrics()["asynqpg.completer.flush_duration"].unit == "s"


async def test_lost_lease_and_loop_stall_metrics(pool: Pool, otel: Otel, sync_conn: Any) -> None:
    task_id = await Producer(pool).enqueue(Task("s", b""))
    await Producer(pool).enqueue(Task("b", b""))
    started = anyio.Event()

    async def wait(task: TaskInfo) -> None:
        started.set()
        await anyio.sleep_forever()

    async def block(task: TaskInfo) -> None:
        time.sleep(0.5)  # blocks the event loop

    async with open_consumer(
        pool,
        handlers={"s": wait, "b": block},
        cancel_check_interval=0.1,
        stall_threshold=0.1,
        **otel.providers,
        **FAST,
    ) as consumer:
        await started.wait()
        sync_conn.execute(  # another consumer takes the lease over
            "UPDATE asynqpg_tasks SET lease_token = nextval('asynqpg_lease_token_seq'),"
            " lease_owner = 'other' WHERE id = %s",
            (task_id,),
        )
        await wait_until(lambda: consumer.statistics().leases_lost == 1)
        await wait_until(lambda: consumer.statistics().loop_stalls >= 1)
    assert otel.value("asynqpg.tasks.leases_lost", task_type="s") == 1
    assert otel.value("asynqpg.consumer.loop_stalls") == consumer.statistics().loop_stalls


async def test_queue_gauges_read_a_cache(pool: Pool, otel: Otel) -> None:
    proceed = anyio.Event()

    async def handle(task: TaskInfo) -> None:
        await proceed.wait()

    await Producer(pool).enqueue_many([Task("q", b"")] * 5 + [Task("later", b"", delay=600)])
    async with (
        open_consumer(
            pool,
            handlers={"q": Handler(handle, workers=1)},
            prefetch=0,
            queue_metrics_interval=0.05,
            **otel.providers,
            **FAST,
        ),
        open_consumer(  # a second consumer on the same provider: both show on the gauges
            pool,
            handlers={"later": handle, "idle": handle},
            queue_metrics_interval=0.05,
            **otel.providers,
            **FAST,
        ),
    ):
        await wait_until(lambda: len(otel.points("asynqpg.queue.depth")) == 3)
        await wait_until(lambda: otel.value("asynqpg.queue.depth", task_type="q") == 4)
        await wait_until(lambda: otel.value("asynqpg.queue.oldest_pending_age", task_type="q") > 0)
        assert otel.value("asynqpg.queue.oldest_pending_age", task_type="later") == 0
        depths = {p.attributes["task_type"]: p.value for p in otel.points("asynqpg.queue.depth")}
        assert depths == {"q": 4, "later": 0, "idle": 0}  # "later" is not ready yet
        metrics_ = otel.metrics()
        assert metrics_["asynqpg.queue.oldest_pending_age"].unit == "s"
        proceed.set()
        await wait_until(lambda: otel.value("asynqpg.queue.depth", task_type="q") == 0)
    # Once the consumers are gone their types leave the gauges.
    assert otel.points("asynqpg.queue.depth") == []


def test_no_meter_provider_means_no_sampling() -> None:
    # The global provider (a no-op until the application sets one) never reads the gauges,
    # so the sampler never queries; a no-op provider turns it off altogether.
    sampler = Telemetry().queue_sampler(["x"])
    assert sampler is not None and not sampler.wanted()
    assert Telemetry(metrics.NoOpMeterProvider()).queue_sampler(["x"]) is None


# -- client -------------------------------------------------------------------------------


async def test_client_spans(pool: Pool, otel: Otel) -> None:
    client = Client(pool, **otel.providers)
    task_id = await Producer(pool).enqueue(Task("c", b""))
    await client.get_task(task_id)
    with pytest.raises(TaskNotFound):
        await client.get_task(task_id + 100)
    page = await client.list_tasks()
    await client.cancel_task(task_id)
    await client.retry_task(task_id)
    with pytest.raises(TaskNotFound):
        await client.retry_task(task_id + 100)
    await client.cancel_task(task_id)
    await client.delete_task(task_id)
    for name in ("get_task", "cancel_task", "retry_task", "delete_task", "list_tasks"):
        spans = otel.spans(f"asynqpg.{name}")
        assert spans, name
        for span in spans:
            assert span.kind is SpanKind.CLIENT
            # Not-found and wrong-state are answers, not failures.
            assert span.status.status_code is StatusCode.UNSET
    assert [attrs(s)["task_id"] for s in otel.spans("asynqpg.get_task")] == [task_id, task_id + 100]
    (listed,) = otel.spans("asynqpg.list_tasks")
    assert attrs(listed) == {"result_count": len(page.tasks)} and page.tasks
    # An unexpected database error is recorded.
    async with pool.connection() as conn:
        await conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await client.get_task(task_id, conn=conn)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await client.list_tasks(conn=conn)
        await conn.execute("ROLLBACK")
    failed = otel.spans("asynqpg.get_task")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "get task failed"
    assert otel.spans("asynqpg.list_tasks")[-1].status.description == "list tasks failed"


async def test_every_instrument_is_registered(pool: Pool, otel: Otel) -> None:
    """The names the dashboard and the docs use, all under the ``asynqpg`` meter."""
    await Producer(pool, **otel.providers).enqueue(Task("e", b""))

    async def handle(task: TaskInfo) -> None:
        pass

    async with open_consumer(
        pool, handlers={"e": handle}, queue_metrics_interval=0.05, **otel.providers, **FAST
    ) as consumer:
        await wait_until(lambda: consumer.statistics().completed == 1)
        await wait_until(lambda: "asynqpg.queue.depth" in otel.metrics())
        names = set(otel.metrics())
    assert names >= {
        "asynqpg.tasks.enqueued",
        "asynqpg.tasks.processed",
        "asynqpg.task.duration",
        "asynqpg.task.enqueue_duration",
        "asynqpg.tasks.in_flight",
        "asynqpg.completer.batch_size",
        "asynqpg.completer.flush_duration",
        "asynqpg.queue.depth",
        "asynqpg.queue.oldest_pending_age",
    }
    _assert_bounded(otel)


# -- examples and dashboard ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
#: The Prometheus names of every instrument (through the OpenTelemetry Prometheus exporter).
PROMETHEUS_NAMES = {
    "asynqpg_tasks_enqueued_total",
    "asynqpg_tasks_processed_total",
    "asynqpg_tasks_errors_total",
    "asynqpg_tasks_in_flight",
    "asynqpg_task_duration_seconds",
    "asynqpg_task_enqueue_duration_seconds",
    "asynqpg_tasks_stale_acks_total",
    "asynqpg_tasks_lease_takeovers_total",
    "asynqpg_tasks_leases_lost_total",
    "asynqpg_consumer_loop_stalls_total",
    "asynqpg_completer_batch_size",
    "asynqpg_completer_flush_duration_seconds",
    "asynqpg_queue_depth",
    "asynqpg_queue_oldest_pending_age_seconds",
}


def _base_names(text: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\basynqpg_\w+", text)}


def _run_example(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_console_example_shows_one_trace(dsn: str) -> None:
    out = _run_example("examples/otel_console.py", dsn)
    assert "processed: {'completed': 2, 'failed': 1}" in out
    assert out.count('"name": "asynqpg.process"') == 3
    assert out.count('"name": "asynqpg.enqueue_many"') == 1
    assert '"name": "asynqpg.tasks.processed"' in out
    span_traces = set(re.findall(r'"trace_id": "(0x[0-9a-f]+)"', out))
    assert len(span_traces) == 1  # request, enqueue, processing and the handler's own spans


def test_prometheus_example_and_dashboard_use_the_same_names(dsn: str) -> None:
    out = _run_example("examples/otel_prometheus.py", dsn, "--port", "0", "--seconds", "2")
    exposed = _base_names(out)
    # Nothing goes stale, is taken over or lost, and nothing blocks the event loop in the
    # example; everything else is exposed.
    quiet = {
        "asynqpg_tasks_stale_acks_total",
        "asynqpg_tasks_lease_takeovers_total",
        "asynqpg_tasks_leases_lost_total",
        "asynqpg_consumer_loop_stalls_total",
    }
    assert PROMETHEUS_NAMES - quiet <= exposed <= PROMETHEUS_NAMES
    dashboard = json.loads((ROOT / "docs" / "grafana-asynqpg.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert _base_names("\n".join(exprs)) == PROMETHEUS_NAMES  # a panel for every instrument
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "asynqpg_tasks_processed_total" in variables["task_type"]["definition"]
