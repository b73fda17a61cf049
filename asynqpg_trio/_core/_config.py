"""The consumer's configuration, its statistics and the handler registration value."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._adaptive import adaptive_limit, max_adaptive_limit
from ._checks import count, seconds, storable
from ._errors import ConfigurationError
from ._results import DEFAULT_RESULT_LIMIT
from ._task import DEFAULT_QUEUE, MAX_QUEUE_LENGTH, MAX_TYPE_LENGTH

if TYPE_CHECKING:
    from ._task import TaskInfo

__all__ = [
    "ConsumerConfig",
    "ConsumerStatistics",
    "ErrorHandler",
    "Handler",
    "HandlerFn",
    "Middleware",
    "SyncHandlerFn",
    "is_async_callable",
]

#: A task handler: ``async def handle(task: TaskInfo) -> object`` (what it returns is the
#: task's result: None, bytes, or a JSON-serialisable value).
HandlerFn = Callable[["TaskInfo"], Awaitable[Any]]
#: A plain (sync) task handler, run in a worker thread: ``def handle(task: TaskInfo) -> None``.
SyncHandlerFn = Callable[["TaskInfo"], object]
#: Middleware takes the next handler and returns a handler that wraps it.
Middleware = Callable[[HandlerFn], HandlerFn]
#: Called for tasks that failed for good: ``async def on_error(task, error) -> None``.
ErrorHandler = Callable[["TaskInfo", BaseException], Awaitable[None]]


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine to await: an ``async def`` function (also
    one marked with ``inspect.markcoroutinefunction``), a `functools.partial` or bound method
    of one, or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return False
    return callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)


@dataclass(frozen=True, slots=True)
class Handler:
    """How one task type is handled.

    A handler is an ``async def`` function, which runs on the event loop, or a plain ``def``
    function (Django, Flask or other blocking code), which runs in a worker thread so that it
    cannot block the loop: the consumer keeps claiming, renewing leases and running the other
    handlers meanwhile.  Which one it is, is decided here, once (`is_sync`).

    Sync handlers: each type has its own bound on threads, ``threads`` (default: its
    ``workers``), shared by nothing else (not anyio's default thread limiter).  The task
    metadata (`get_task_metadata`) and every other context variable are copied into the
    thread.  A thread cannot be killed: when the timeout passes, or the task is cancelled, its
    lease lost or the shutdown grace ends, the attempt is settled at once exactly as for an
    async handler (a timeout is a failed attempt, "timed out after N s") and the thread is
    *abandoned*: it runs on until the function returns, and whatever it returns or raises is
    discarded.  An abandoned thread keeps its slot until it ends, so a type never has more
    than ``threads`` threads, even when its handler hangs; while the slots are taken, the
    type's next tasks wait for one, and the wait counts towards their timeout.  A long sync
    handler can stop early once abandoned by calling ``anyio.from_thread.check_cancelled()``
    now and then (it raises when the attempt is over).  Shutdown stays bounded: the consumer
    does not wait for abandoned threads.  On Trio they are daemon threads; on asyncio the
    interpreter waits for them at exit.

    A plain function must not return an awaitable (a ``lambda`` calling an async function, a
    sync decorator around one): make it ``async def``.  If it does, the task fails at once
    (no retry) with a `TypeError` saying so.

    Args:
        fn: ``async def fn(task: TaskInfo) -> None``, or ``def fn(task: TaskInfo) -> None``
            run in a worker thread.  Returning completes the task; raising `SkipRetry`,
            `TaskSnooze`, `TaskSnoozeWithError` or any other exception decides its fate (see
            `open_consumer`).
        workers: handler actors for this type: how many of its tasks run at once (>= 1).
        timeout: seconds a task may run before it is cancelled and counted as a failed
            attempt, whatever the handler then does with the cancellation (never sooner; up
            to a millisecond later: an actor running queued tasks back to back moves its
            deadline only when it would otherwise come early).  Default 30 s; None for no
            limit.  The task's lease is renewed for as long as its handler runs, so the
            timeout, not ``lease_duration``, bounds how long a task may take: give a long
            task a larger timeout (or None), not a longer lease.
        middleware: per-type middleware, outermost first, inside the consumer's global one.
            Middleware always wraps an async function: for a sync handler, the one that
            runs it in its thread.
        threads: sync handlers only: the most threads this type runs at once, abandoned ones
            included (>= 1; default ``workers``).
        result_limit: the longest result stored, in bytes once encoded (default 1 MiB).  A
            handler's return value is stored with its completed task (`Client.get_result`,
            `Client.wait`): None stores nothing, bytes are stored as they are, anything else
            as JSON.  A longer result, or one JSON cannot encode, fails the attempt
            (`ResultTooLarge`, `ResultNotSerializable`) like an exception would.

    Raises:
        ConfigurationError: ``fn`` is not callable, or a generator function; a count or a
            timeout is out of range; ``threads`` is given for an async handler.
    """

    fn: HandlerFn | SyncHandlerFn
    workers: int = field(default=10, kw_only=True)
    timeout: float | None = field(default=30.0, kw_only=True)
    middleware: Sequence[Middleware] = field(default=(), kw_only=True)
    threads: int | None = field(default=None, kw_only=True)
    result_limit: int = field(default=DEFAULT_RESULT_LIMIT, kw_only=True)

    def __post_init__(self) -> None:
        fn = self.fn
        if not callable(fn):
            raise ConfigurationError(
                f"handler must be a function (async def, or a plain def run in a thread),"
                f" got {fn!r}"
            )
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise ConfigurationError(
                f"handler must be a function that returns, not a generator function: {fn!r}"
            )
        count(self.workers, "workers")
        count(self.result_limit, "result_limit")
        if self.timeout is not None:
            object.__setattr__(self, "timeout", seconds(self.timeout, "timeout"))
        object.__setattr__(self, "middleware", tuple(self.middleware))
        if self.threads is not None:
            count(self.threads, "threads")
            if not self.is_sync:
                raise ConfigurationError(
                    f"threads= is for plain (sync) handlers, which run in threads;"
                    f" {fn!r} is async and runs on the event loop"
                )

    @property
    def is_sync(self) -> bool:
        """Whether ``fn`` is a plain function, run in a worker thread (else it is async)."""
        return not is_async_callable(self.fn)

    @property
    def thread_limit(self) -> int:
        """The most threads a sync handler of this type runs at once: ``threads`` or, by
        default, ``workers``."""
        return self.workers if self.threads is None else self.threads


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Validated consumer settings (see `open_consumer` for their meaning and defaults)."""

    handlers: dict[str, Handler]
    middleware: tuple[Middleware, ...]
    consumer_id: str
    poll_interval: float
    prefetch: int | None
    shutdown_timeout: float
    flush_timeout: float
    lease_duration: float
    cancel_check_interval: float
    batch_size: int
    batch_interval: float | None
    max_backlog: int
    message_limit: int
    queue_metrics_interval: float = 5.0
    stall_threshold: float = 7.5
    queues: dict[str, int | None] = field(default_factory=lambda: {DEFAULT_QUEUE: None})

    def limit(self, task_type: str) -> int:
        """Most tasks of a type ever held at once: its workers plus its largest prefetch
        buffer (the size of its lease channel)."""
        workers = self.handlers[task_type].workers
        return max_adaptive_limit(workers) if self.prefetch is None else workers + self.prefetch

    def capacity(self, task_type: str, mean: float | None, *, backlogged: bool) -> int:
        """Most tasks of a type to hold now: fixed with a ``prefetch``; else adaptive, from
        its handlers' ``mean`` duration and whether it is ``backlogged`` (`_adaptive`)."""
        workers = self.handlers[task_type].workers
        if self.prefetch is not None:
            return workers + self.prefetch
        return adaptive_limit(workers, mean, backlogged=backlogged)


def build_config(handlers: Any, middleware: Any, **raw: Any) -> ConsumerConfig:
    """Validate ``open_consumer``'s arguments; raise `ConfigurationError` with the reason."""
    if not isinstance(handlers, dict) or not handlers:
        raise ConfigurationError(
            "handlers must be a non-empty dict of task type -> Handler (or function)"
        )
    checked: dict[str, Handler] = {}
    for task_type, handler in handlers.items():
        if not isinstance(task_type, str) or not 0 < len(task_type) <= MAX_TYPE_LENGTH:
            raise ConfigurationError(f"task type must be 1 to 255 characters, got {task_type!r}")
        if not storable(task_type):
            raise ConfigurationError(
                f"task type must be text without NUL or lone surrogates, got {task_type!r}"
            )
        checked[task_type] = handler if isinstance(handler, Handler) else Handler(handler)
    consumer_id = raw["consumer_id"]
    if not isinstance(consumer_id, str) or not 0 < len(consumer_id) < 128:
        raise ConfigurationError(f"consumer_id must be 1 to 127 characters, got {consumer_id!r}")
    if not storable(consumer_id):
        raise ConfigurationError(
            f"consumer_id must be text without NUL or lone surrogates, got {consumer_id!r}"
        )
    prefetch = raw["prefetch"]
    if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 0):
        raise ConfigurationError(f"prefetch must be an int >= 0 or None, got {prefetch!r}")
    for name in ("batch_size", "max_backlog", "message_limit"):
        count(raw[name], name)
    lease = seconds(raw["lease_duration"], "lease_duration")
    if lease < 1:
        raise ConfigurationError(f"lease_duration must be at least 1 second, got {lease}")
    stall = raw.get("stall_threshold")
    stall_threshold = lease / 4 if stall is None else seconds(stall, "stall_threshold")
    return ConsumerConfig(
        handlers=checked,
        middleware=tuple(middleware),
        consumer_id=consumer_id,
        poll_interval=seconds(raw["poll_interval"], "poll_interval"),
        prefetch=prefetch,
        shutdown_timeout=seconds(raw["shutdown_timeout"], "shutdown_timeout", allow_zero=True),
        flush_timeout=seconds(raw["flush_timeout"], "flush_timeout"),
        lease_duration=lease,
        cancel_check_interval=seconds(raw["cancel_check_interval"], "cancel_check_interval"),
        batch_size=raw["batch_size"],
        batch_interval=None
        if raw["batch_interval"] is None
        else seconds(raw["batch_interval"], "batch_interval", allow_zero=True),
        max_backlog=max(raw["max_backlog"], raw["batch_size"]),
        message_limit=raw["message_limit"],
        queue_metrics_interval=seconds(
            raw.get("queue_metrics_interval", 5.0), "queue_metrics_interval"
        ),
        stall_threshold=stall_threshold,
        queues=check_queues(raw.get("queues")),
    )


def check_queues(queues: Any) -> dict[str, int | None]:
    """``open_consumer``'s ``queues``: None (the default queue only), names, or a mapping of
    name -> cap (None: no cap of its own); raise `ConfigurationError` with the reason."""
    if queues is None:
        return {DEFAULT_QUEUE: None}
    if isinstance(queues, str):
        raise ConfigurationError(
            f"queues must be a list of queue names or a dict of name -> cap, got the string"
            f" {queues!r} (write [{queues!r}])"
        )
    pairs: list[tuple[Any, Any]]
    if isinstance(queues, Mapping):
        pairs = list(queues.items())
    elif isinstance(queues, Iterable):
        pairs = [(name, None) for name in queues]
    else:
        raise ConfigurationError(
            f"queues must be a list of queue names or a dict of name -> cap, got {queues!r}"
        )
    if not pairs:
        raise ConfigurationError("queues must name at least one queue")
    checked: dict[str, int | None] = {}
    for name, cap in pairs:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_QUEUE_LENGTH:
            raise ConfigurationError(
                f"a queue name must be 1 to {MAX_QUEUE_LENGTH} characters, got {name!r}"
            )
        if not storable(name):
            raise ConfigurationError(
                f"a queue name must be text without NUL or lone surrogates, got {name!r}"
            )
        checked[name] = None if cap is None else count(cap, f"the cap of queue {name!r}")
    return checked


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    """A snapshot of a consumer's counters, from `Consumer.statistics`.

    Attributes:
        claimed: tasks claimed.
        completed, failed, retried, snoozed: handler outcomes written.
        released: tasks handed back unstarted or unfinished at shutdown (no attempt used).
        cancelled: running handlers cancelled because their task was cancelled or its lease
            lost.
        stale_acks: outcomes the database refused because the lease had changed (each is
            logged as a warning).
        leases_lost: leases found lost while their handler ran: taken over or rescued after
            they expired (a blocked event loop, say), or deleted; not client cancels.  Each is
            logged as a warning.
        loop_stalls: times the event loop did not run for longer than ``stall_threshold``
            (each is logged as a warning naming the handlers that may have blocked it).
        lease_takeovers: expired leases of other (dead) consumers this one took over.
        takeover_failures: such tasks failed because no attempt was left.
        in_flight: tasks held now (running, buffered, or awaiting their write).
        pending_writes: outcomes waiting in the completer.
        actor_restarts: actors restarted after a transient database error.
        abandoned: tasks left to the janitor by the last shutdown: still held when it ended
            (cut short by `Consumer.stop_now` or by its bound, with handlers that ignored
            cancellation or outcomes the database did not take); they stay running until
            their lease expires, then are rescued.  0 after a clean shutdown.
    """

    claimed: int
    completed: int
    failed: int
    retried: int
    snoozed: int
    released: int
    cancelled: int
    stale_acks: int
    leases_lost: int
    loop_stalls: int
    lease_takeovers: int
    takeover_failures: int
    in_flight: int
    pending_writes: int
    actor_restarts: int
    abandoned: int = 0
