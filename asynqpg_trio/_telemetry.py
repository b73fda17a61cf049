"""OpenTelemetry metrics and spans for the producer, the consumer and the client.

Theory of operation
-------------------
Every public component builds one `Telemetry` from its ``meter_provider`` and
``tracer_provider`` (None: the global providers, which are no-ops until the application sets
real ones) and hands it to its actors, which call its methods at each event.  Meter and tracer
are named ``asynqpg``; instrument, span and attribute names are the Go library's, plus a few
for operators (queue depth and lag, stale acknowledgements, lease takeovers, completer batch
size and flush latency).

Cost without a provider: the API's no-op instruments and spans.  The hot path builds no string
and no attribute dict per task: attribute dicts are made once per (type, key, value) and
cached; span attributes are set only when the span is recording.

Trace propagation: the producer stores the W3C ``traceparent``/``tracestate`` of its enqueue
span (or, with no tracer, of the caller's current span) in the task's ``trace_context``
column; the consumer's ``asynqpg.process`` span is that span's child, so enqueue and every
attempt are one trace.  Without a stored context the process span is a new root, never a child
of whatever was current when the consumer started.

Queue gauges: an observable gauge's callback is synchronous and may run on an exporter thread,
so it never touches the database.  It reads a cache that a small actor of each consumer
(`_sampler`) refreshes every ``queue_metrics_interval`` seconds, and only while someone reads
the gauges (or the consumer was given its own meter provider).  Instruments are registered once
per meter, so the gauges of every consumer sharing a provider go through one `_QueueBoard`.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._batching import OutcomeKind
from ._errors import AsynqpgError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

    from ._book import Claimed
    from ._outcome import Decision

__all__ = ["NAME", "QueueSampler", "TaskRun", "Telemetry", "shared_telemetry"]

#: The meter and tracer name (the Go library's).
NAME: Final = "asynqpg"
_W3C: Final = TraceContextTextMapPropagator()
_EMPTY: Final = otel_context.Context()
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SIZES: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)
_ATTR_CACHE_LIMIT: Final = 4096
_NOT_ERRORS: Final = frozenset({OutcomeKind.COMPLETE, OutcomeKind.SNOOZE})
#: Gauges stop being refreshed this long after their last read.
_READ_WINDOW: Final = 600.0

_Attrs = dict[str, str]


class Telemetry:
    """The instruments and tracer of one component, and the events its actors report."""

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(NAME, tracer_provider=tracer_provider)
        self._meter = meter = metrics.get_meter(NAME, meter_provider=meter_provider)
        self._meter_provider = meter_provider
        self._attrs: dict[tuple[str, str, str], _Attrs] = {}
        counter, histogram = meter.create_counter, meter.create_histogram

        def seconds(name: str, description: str) -> metrics.Histogram:
            return histogram(name, "s", description, explicit_bucket_boundaries_advisory=_SECONDS)

        self.enqueued = counter("asynqpg.tasks.enqueued", "", "Number of tasks enqueued")
        self.processed = counter(
            "asynqpg.tasks.processed", "", "Number of tasks that finished processing"
        )
        self.errors = counter(
            "asynqpg.tasks.errors", "", "Number of task processing or enqueue errors"
        )
        self.duration = seconds("asynqpg.task.duration", "Task handler execution duration")
        self.enqueue_duration = seconds(
            "asynqpg.task.enqueue_duration", "Time to insert task into database"
        )
        self.in_flight = meter.create_up_down_counter(
            "asynqpg.tasks.in_flight", "", "Number of tasks currently being executed by workers"
        )
        self.stale_acks = counter(
            "asynqpg.tasks.stale_acks",
            "",
            "Outcomes the database refused because the task's lease had changed",
        )
        self.lease_takeovers = counter(
            "asynqpg.tasks.lease_takeovers",
            "",
            "Expired leases of other consumers taken over by a claim",
        )
        self.batch_size = histogram(
            "asynqpg.completer.batch_size",
            "{outcome}",
            "Outcomes written per completer flush",
            explicit_bucket_boundaries_advisory=_SIZES,
        )
        self.flush_duration = seconds(
            "asynqpg.completer.flush_duration", "Time to write one completer flush"
        )

    def attrs(self, task_type: str, key: str = "", value: str = "") -> _Attrs:
        """``{"task_type": task_type}`` (plus ``{key: value}``), built once and cached."""
        cache_key = (task_type, key, value)
        found = self._attrs.get(cache_key)
        if found is None:
            found = {"task_type": task_type, key: value} if key else {"task_type": task_type}
            if len(self._attrs) < _ATTR_CACHE_LIMIT:
                self._attrs[cache_key] = found
        return found

    def enqueue(self, types: Sequence[str], *, single: bool, has_delay: bool) -> EnqueueOp:
        """Start an ``asynqpg.enqueue`` (one task) or ``asynqpg.enqueue_many`` span."""
        span = self.tracer.start_span(
            "asynqpg.enqueue" if single else "asynqpg.enqueue_many", kind=SpanKind.PRODUCER
        )
        if span.is_recording():
            if single:
                span.set_attribute("task_type", types[0])
                span.set_attribute("has_delay", has_delay)
            else:
                span.set_attribute("batch_size", len(types))
        return EnqueueOp(self, span, types, single)

    def task_run(self, claimed: Claimed) -> TaskRun:
        """Start the ``asynqpg.process`` span of one attempt (not yet current)."""
        parent = _parent_context(claimed.trace_context)
        span = self.tracer.start_span("asynqpg.process", context=parent, kind=SpanKind.CONSUMER)
        if span.is_recording():
            span.set_attribute("task_type", claimed.type)
            span.set_attribute("task_id", claimed.id)
            span.set_attribute("attempt", claimed.attempts_elapsed)
        return TaskRun(self, span, claimed.type)

    def lease_takeover(self, task_type: str) -> None:
        """A claim took over another consumer's expired lease."""
        self.lease_takeovers.add(1, self.attrs(task_type))

    def flushed(self, size: int, seconds: float, stale_types: Iterable[str]) -> None:
        """The completer wrote a plan of ``size`` outcomes; some were stale."""
        self.batch_size.record(size)
        self.flush_duration.record(seconds)
        for task_type in stale_types:
            self.stale_acks.add(1, self.attrs(task_type))

    def queue_sampler(self, types: Sequence[str]) -> QueueSampler | None:
        """The queue gauges' cache for a consumer of ``types`` (None: metrics are off)."""
        own = self._meter_provider
        provider = own if own is not None else metrics.get_meter_provider()
        if isinstance(provider, metrics.NoOpMeterProvider):
            return None
        board = _BOARDS.get(provider)
        if board is None:
            board = _BOARDS[provider] = _QueueBoard(self._meter)
        return QueueSampler(board, tuple(types), always=own is not None)

    def client_span(self, name: str, task_id: int | None = None) -> ClientSpan:
        """A client span (``asynqpg.get_task`` ...) that records unexpected errors only."""
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT)
        if task_id is not None and span.is_recording():
            span.set_attribute("task_id", task_id)
        return ClientSpan(span, name)


@functools.lru_cache(maxsize=16)
def shared_telemetry(
    meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None
) -> Telemetry:
    """One `Telemetry` per pair of providers, for the module-level sync functions."""
    return Telemetry(meter_provider, tracer_provider)


def _parent_context(carrier: Any) -> otel_context.Context:
    """The context a stored W3C carrier describes; empty (a new root) if none or invalid."""
    if not isinstance(carrier, dict) or "traceparent" not in carrier:
        return _EMPTY
    try:
        return _W3C.extract({str(k): str(v) for k, v in carrier.items()}, context=_EMPTY)
    except Exception:  # a malformed carrier must never fail a task
        return _EMPTY


def _fail(span: trace.Span, exc: BaseException, description: str) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, description))


class EnqueueOp:
    """One enqueue call's span and metrics; a context manager around the insert."""

    __slots__ = ("_single", "_span", "_started", "_t", "_types", "trace")

    def __init__(self, t: Telemetry, span: trace.Span, types: Sequence[str], single: bool) -> None:
        self._t, self._span, self._types, self._single = t, span, types, single
        span_context = span.get_span_context()
        ctx = trace.set_span_in_context(span) if span_context.is_valid else None
        carrier: dict[str, str] = {}
        if span_context.is_valid:
            _W3C.inject(carrier, context=ctx)
        #: The JSON W3C carrier to store on the rows, or None.
        self.trace: str | None = json.dumps(carrier, sort_keys=True) if carrier else None
        self._started = time.perf_counter()

    def __enter__(self) -> EnqueueOp:
        return self

    def inserted(self, rows: Sequence[Sequence[Any]], first_id: int | None) -> None:
        """Record success: ``rows`` are the inserted (id, type, token) rows."""
        seconds = time.perf_counter() - self._started
        t = self._t
        for task_type, n in Counter(str(row[1]) for row in rows).items():
            t.enqueued.add(n, t.attrs(task_type))
        for task_type in dict.fromkeys(self._types):
            t.enqueue_duration.record(seconds, t.attrs(task_type))
        if first_id is not None and self._single and self._span.is_recording():
            self._span.set_attribute("task_id", first_id)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception):
            if not isinstance(exc, AsynqpgError):  # a database failure: count it
                t = self._t
                for task_type, n in Counter(self._types).items():
                    t.errors.add(n, t.attrs(task_type, "error_type", "db_error"))
            _fail(self._span, exc, "enqueue failed" if self._single else "batch enqueue failed")
        self._span.end()


class TaskRun:
    """One attempt's span, in-flight count and duration.

    ``with run:`` around the handler call makes the span current and times the handler; one
    of `finish`, `cancelled` or `released` ends it.
    """

    __slots__ = ("_span", "_started", "_t", "_token", "_type", "_type_attrs", "duration")

    def __init__(self, t: Telemetry, span: trace.Span, task_type: str) -> None:
        self._t, self._span, self._type = t, span, task_type
        self._type_attrs = t.attrs(task_type)
        self._token: Token[otel_context.Context] | None = None
        self._started = 0.0
        self.duration = 0.0

    def __enter__(self) -> TaskRun:
        self._t.in_flight.add(1, self._type_attrs)
        if self._span.get_span_context().is_valid:  # else there is no trace to continue
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.duration = time.perf_counter() - self._started
        if self._token is not None:
            otel_context.detach(self._token)
        self._t.in_flight.add(-1, self._type_attrs)

    def _processed(self, status: str) -> None:
        attrs = self._t.attrs(self._type, "status", status)
        self._t.processed.add(1, attrs)
        self._t.duration.record(self.duration, attrs)
        if self._span.is_recording():
            self._span.set_attribute("status", status)

    def finish(self, decision: Decision, error: BaseException | None, *, timed_out: bool) -> None:
        """The handler's run was decided: count it; errors (not snoozes) are errors."""
        self._processed(decision.status)
        if error is not None and decision.outcome.kind not in _NOT_ERRORS:
            error_type = "timeout" if timed_out else "handler_error"
            self._t.errors.add(1, self._t.attrs(self._type, "error_type", error_type))
            _fail(self._span, error, "task processing failed")
        self._span.end()

    def cancelled(self) -> None:
        """The task was cancelled remotely or its lease lost: not an error."""
        self._processed("cancelled")
        self._span.end()

    def released(self) -> None:
        """The handler was stopped at the end of the shutdown grace; the task goes back."""
        if self._span.is_recording():
            self._span.set_attribute("status", "released")
        self._span.end()


class ClientSpan:
    """A client call's span: ends it, recording errors other than our own refusals."""

    __slots__ = ("_name", "span")

    def __init__(self, span: trace.Span, name: str) -> None:
        self.span, self._name = span, name

    def __enter__(self) -> trace.Span:
        return self.span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, AsynqpgError):
            _fail(self.span, exc, self._name.removeprefix("asynqpg.").replace("_", " ") + " failed")
        self.span.end()


class _QueueBoard:
    """The queue gauges of one meter provider, fed by the samplers of its consumers."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._samplers: set[QueueSampler] = set()
        self._attrs: dict[str, _Attrs] = {}
        self.last_read = -math.inf
        meter.create_observable_gauge(
            "asynqpg.queue.depth",
            callbacks=[lambda options: self._observe(0)],
            unit="{task}",
            description="Pending tasks ready to run, per type (sampled)",
        )
        meter.create_observable_gauge(
            "asynqpg.queue.oldest_pending_age",
            callbacks=[lambda options: self._observe(1)],
            unit="s",
            description="How long the oldest ready pending task has waited, per type (sampled)",
        )

    def show(self, sampler: QueueSampler, shown: bool) -> None:
        with self._lock:
            (self._samplers.add if shown else self._samplers.discard)(sampler)

    def _merged(self) -> dict[str, tuple[int, float]]:
        self.last_read = time.monotonic()
        with self._lock:
            samplers = sorted(self._samplers, key=lambda s: s.sampled_at)
        merged: dict[str, tuple[int, float]] = {}
        for sampler in samplers:  # the freshest sample of a type wins
            merged.update(sampler.values)
        return merged

    def _attr(self, task_type: str) -> _Attrs:
        found = self._attrs.get(task_type)
        if found is None:
            found = self._attrs[task_type] = {"task_type": task_type}
        return found

    def _observe(self, index: int) -> Iterable[Observation]:
        merged = self._merged()
        return [metrics.Observation(v[index], self._attr(t)) for t, v in merged.items()]


_BOARDS: weakref.WeakKeyDictionary[Any, _QueueBoard] = weakref.WeakKeyDictionary()


class QueueSampler:
    """One consumer's cached queue sample; ``with sampler:`` shows it on the gauges."""

    def __init__(self, board: _QueueBoard, types: tuple[str, ...], *, always: bool) -> None:
        self._board = board
        self._always = always
        self.types = types
        self.values: Mapping[str, tuple[int, float]] = {}
        self.sampled_at = -math.inf

    def __enter__(self) -> QueueSampler:
        self._board.show(self, True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._board.show(self, False)

    def wanted(self) -> bool:
        """Whether to refresh: the consumer has its own provider, or the gauges were read."""
        return self._always or time.monotonic() - self._board.last_read < _READ_WINDOW

    def update(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """Replace the sample with (type, ready pending tasks, oldest ready age) rows."""
        self.values = {t: (int(depth), float(age)) for t, depth, age in rows}
        self.sampled_at = time.monotonic()
