"""OpenTelemetry metrics and spans for the producer, the consumer and the client.

Theory of operation
-------------------
Every public component builds one `Telemetry` from its ``meter_provider`` and
``tracer_provider`` (None: the global providers, which are no-ops until the application sets
real ones) and hands it to its actors, which call its methods at each event.  Meter and tracer
are named ``asynqpg``; instrument, span and attribute names are the Go library's, plus a few
for operators (queue depth and lag, stale acknowledgements, lease takeovers, leases lost,
event loop stalls, completer batch size and flush latency).

Cost without a provider: the API's no-op instruments and spans.  The hot path builds no string
and no attribute dict per task: attribute dicts are made once per (type, key, value) and
cached; span attributes are set only when the span is recording.

Trace propagation: the producer stores the W3C ``traceparent``/``tracestate`` of its enqueue
span (or, with no tracer, of the caller's current span) in the task's ``trace_context``
column; the consumer's ``asynqpg.process`` span is that span's child, so enqueue and every
attempt are one trace.  Without a stored context the process span is a new root, never a child
of whatever was current when the consumer started.

Queue gauges: see `_gauges`.

Quiet runs: while no provider was given and OpenTelemetry's global ones are still its
placeholders, a task run records nothing at all (`QuietRun`): the span and instrument calls
would cost more than a no-op handler.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._core._batching import OutcomeKind
from .._core._errors import AsynqpgError
from ._gauges import QueueSampler

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .._core._book import Lease
    from .._core._outcome import Decision

__all__ = ["NAME", "QueueSampler", "QuietRun", "TaskRun", "Telemetry", "shared_telemetry"]

#: The meter and tracer name (the Go library's).
NAME: Final = "asynqpg"
_W3C: Final = TraceContextTextMapPropagator()
_EMPTY: Final = otel_context.Context()
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SIZES: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)
_ATTR_CACHE_LIMIT: Final = 4096
_NOT_ERRORS: Final = frozenset({OutcomeKind.COMPLETE, OutcomeKind.SNOOZE})

_Attrs = dict[str, str]
#: Tracer providers that record nothing: the API's placeholder until an SDK is set, the no-op.
_NO_TRACER_PROVIDERS: Final = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: The same for meter providers, by class name: the placeholder's class is private to the API
#: (should it be renamed, runs are simply never quiet).
_NO_METER_PROVIDERS: Final = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider"})
_QUIET_RECHECK: Final = 1.0


class Telemetry:
    """The instruments and tracer of one component, and the events its actors report."""

    tracer: trace.Tracer
    enqueued: metrics.Counter
    processed: metrics.Counter
    errors: metrics.Counter
    duration: metrics.Histogram
    enqueue_duration: metrics.Histogram
    in_flight: metrics.UpDownCounter
    stale_acks: metrics.Counter
    lease_takeovers: metrics.Counter
    leases_lost: metrics.Counter
    loop_stalls: metrics.Counter
    batch_size: metrics.Histogram
    flush_duration: metrics.Histogram

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(NAME, tracer_provider=tracer_provider)
        self._meter = meter = metrics.get_meter(NAME, meter_provider=meter_provider)
        self._meter_provider = meter_provider
        self._own_providers = meter_provider is not None or tracer_provider is not None
        self._quiet = False
        self._quiet_until = -math.inf
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
        self.leases_lost = counter(
            "asynqpg.tasks.leases_lost",
            "",
            "Leases found lost (taken over, rescued or deleted) while the task's handler ran",
        )
        self.loop_stalls = counter(
            "asynqpg.consumer.loop_stalls",
            "",
            "Times the consumer's event loop did not run for longer than the stall threshold",
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

    def quiet(self) -> bool:
        """Whether nothing a task run reports would be recorded: no provider was given and
        the global ones are still OpenTelemetry's placeholders.

        A quiet run skips the span and the instruments, which cost more than a no-op
        handler.  The answer is kept for `_QUIET_RECHECK` seconds (asking costs environment
        lookups): an SDK the application installs later is used from then on.
        """
        if self._own_providers:
            return False
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet = isinstance(trace.get_tracer_provider(), _NO_TRACER_PROVIDERS) and (
                type(metrics.get_meter_provider()).__name__ in _NO_METER_PROVIDERS
            )
            self._quiet_until = now + _QUIET_RECHECK
        return self._quiet

    def task_run(self, lease: Lease) -> TaskRun | QuietRun:
        """Start the ``asynqpg.process`` span of one attempt (not yet current)."""
        if self.quiet():
            return _QUIET_RUN
        parent = _parent_context(lease.trace_context)
        span = self.tracer.start_span("asynqpg.process", context=parent, kind=SpanKind.CONSUMER)
        if span.is_recording():
            span.set_attribute("task_type", lease.type)
            span.set_attribute("task_id", lease.task_id)
            span.set_attribute("attempt", lease.attempts_elapsed)
        return TaskRun(self, span, lease.type)

    def lease_takeover(self, task_type: str) -> None:
        """A claim took over another consumer's expired lease."""
        self.lease_takeovers.add(1, self.attrs(task_type))

    def lease_lost(self, task_type: str) -> None:
        """A lease was found lost (not cancelled) while its handler ran."""
        self.leases_lost.add(1, self.attrs(task_type))

    def loop_stall(self) -> None:
        """The event loop did not run for longer than the stall threshold."""
        self.loop_stalls.add(1)

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
        return QueueSampler.for_provider(provider, self._meter, types, always=own is not None)

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

    def inserted(self, counts: Mapping[str, int], first_id: int | None) -> None:
        """Record success: ``counts`` says how many tasks of each type were inserted."""
        seconds = time.perf_counter() - self._started
        t = self._t
        for task_type, n in counts.items():
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

    #: The handler's run time in seconds, set when the ``with`` block exits.
    duration: float

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


class QuietRun:
    """`TaskRun`'s stand-in when telemetry is quiet: records nothing."""

    __slots__ = ()

    def __enter__(self) -> QuietRun:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        pass

    def finish(self, decision: Decision, error: BaseException | None, *, timed_out: bool) -> None:
        """Nothing to record."""

    def cancelled(self) -> None:
        """Nothing to record."""

    def released(self) -> None:
        """Nothing to record."""


_QUIET_RUN: Final = QuietRun()


class ClientSpan:
    """A client call's span: ends it, recording errors other than our own refusals."""

    __slots__ = ("_name", "span")

    span: trace.Span

    def __init__(self, span: trace.Span, name: str) -> None:
        self.span, self._name = span, name

    def __enter__(self) -> trace.Span:
        return self.span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, AsynqpgError):
            _fail(self.span, exc, self._name.removeprefix("asynqpg.").replace("_", " ") + " failed")
        self.span.end()
