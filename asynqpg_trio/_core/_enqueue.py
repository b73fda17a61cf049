"""Enqueue planning shared by the async producer and the sync twin (no I/O here).

`plan_batch` validates a batch (all or nothing) and builds the insert's parameters
(`_inserted.read_result` maps what the insert returned back to the inputs).

Validation: a batch of plain tasks (`Task` itself, ``bytes`` payloads, numeric delays, int or
None ``max_retry``) is checked column by column, each distinct value once, so a batch of one
task type costs a few list passes rather than a validation per task.  Anything else, or any
invalid value, takes the per-task path, which is the definition of valid and names the index of
the first bad task; the column path accepts exactly what it accepts (it calls the same checks).

Parameters: the payloads always go as an array (they give the row count).  Every other column
(type, token, delay, process_at, attempts, queue, priority) goes as ONE scalar when every task
has the same value, else as an array with a NULL scalar; the statement reads ``coalesce(array
element, scalar)``, so a uniform column costs neither a Python list nor a per-row array element.
The trace context is per call, always a scalar.

A batch with a unique task (`Unique`) also sends each task's unique key (explicit or derived),
period and states, and takes a statement of its own; batches without one never pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ._checks import count
from ._errors import InvalidTask
from ._task import (
    MAX_ATTEMPTS,
    Task,
    attempts_for,
    check_delay,
    check_priority,
    check_process_at,
    check_queue,
    check_token,
    check_type,
    validate_task,
)
from ._unique import Unique, unique_columns

__all__ = [
    "BatchPlan",
    "check_default_max_retry",
    "has_delay",
    "plan_batch",
    "with_trace",
]

_NONE = type(None)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A validated batch: the insert's parameters and what is needed to map results back.

    Attributes:
        params: the statement's parameters (arrays for varying columns, scalars otherwise).
        types: each task's type, in input order.
        keys: each task's (type, token), None for a task without one; None when no task
            has a token (the statement then returns only ids).
        unique_keys: each task's unique key (explicit or derived), None for a task without
            `Unique`; None when no task is unique (the batch takes a statement without them).
    """

    params: dict[str, Any]
    types: list[str]
    keys: tuple[tuple[str, str] | None, ...] | None
    unique_keys: tuple[str | None, ...] | None = None


def check_default_max_retry(value: int) -> int:
    """Validate a producer's ``default_max_retry``."""
    return count(value, "default_max_retry", minimum=0, maximum=MAX_ATTEMPTS)


@dataclass(frozen=True, slots=True)
class _Columns:
    """A valid batch's normalised values, one list per column, in input order."""

    types: list[str]
    payloads: list[bytes]
    tokens: list[str | None]
    delays: list[float]
    process_at: list[datetime | None]
    attempts: list[int]
    queues: list[str]
    priorities: list[int]
    uniques: list[Unique | None]


def plan_batch(tasks: Sequence[Any], default_max_retry: int) -> BatchPlan:
    """Validate every task (raising `InvalidTask` with the index of the first bad one)."""
    columns = _plain_columns(tasks, default_max_retry)
    if columns is None:
        columns = _checked_columns(tasks, default_max_retry)
    params: dict[str, Any] = {"payloads": columns.payloads, "trace": None}
    # (array parameter, scalar parameter, values) of each column but the payloads.
    by_column: tuple[tuple[str, str, list[Any]], ...] = (
        ("types", "type", columns.types),
        ("tokens", "token", columns.tokens),
        ("delays", "delay", columns.delays),
        ("process_ats", "process_at", columns.process_at),
        ("attempts", "attempt", columns.attempts),
        ("queues", "queue", columns.queues),
        ("priorities", "priority", columns.priorities),
    )
    for array, scalar, values in by_column:
        _bind(params, array, scalar, values)
    keys = None
    if params["token"] is not None or params["tokens"] is not None:
        keys = tuple(
            None if token is None else (task_type, token)
            for task_type, token in zip(columns.types, columns.tokens, strict=True)
        )
    if columns.uniques.count(None) == len(columns.uniques):
        return BatchPlan(params=params, types=columns.types, keys=keys)
    unique_keys, periods, masks = unique_columns(columns.uniques, columns.payloads)
    _bind(params, "unique_keys", "unique_key", unique_keys)
    _bind(params, "unique_periods", "unique_period", periods)
    _bind(params, "unique_masks", "unique_mask", masks)
    return BatchPlan(params=params, types=columns.types, keys=keys, unique_keys=tuple(unique_keys))


def _bind(params: dict[str, Any], array: str, scalar: str, values: Sequence[Any]) -> None:
    """One column's parameters: one scalar when every task has the same value, else the array
    (and a NULL scalar)."""
    first = values[0]
    uniform = values.count(first) == len(values)
    params[array] = None if uniform else values
    params[scalar] = first if uniform else None


def _checked_columns(tasks: Sequence[Any], default_max_retry: int) -> _Columns:
    valid = []
    for index, task in enumerate(tasks):
        try:
            valid.append(validate_task(task, default_max_retry))
        except InvalidTask as ex:
            raise InvalidTask(str(ex), index=index) from None
    return _Columns(
        types=[v.type for v in valid],
        payloads=[v.payload for v in valid],
        tokens=[v.token for v in valid],
        delays=[v.delay for v in valid],
        process_at=[v.process_at for v in valid],
        attempts=[v.attempts for v in valid],
        queues=[v.queue for v in valid],
        priorities=[v.priority for v in valid],
        uniques=[v.unique for v in valid],
    )


def _plain_columns(tasks: Sequence[Any], default_max_retry: int) -> _Columns | None:
    """The columns of a batch of plain tasks, each distinct value checked once; None when a
    task is not plain or a value is invalid (the per-task path then says which)."""
    if set(map(type, tasks)) != {Task}:
        return None
    payloads = [t.payload for t in tasks]
    delays = [t.delay for t in tasks]
    retries = [t.max_retry for t in tasks]
    if (
        set(map(type, payloads)) != {bytes}
        or not set(map(type, delays)) <= {float, int}
        or not set(map(type, retries)) <= {_NONE, int}
    ):
        return None  # bool is neither int nor float here: the per-task path refuses it
    types = [t.type for t in tasks]
    tokens = [t.idempotency_token for t in tasks]
    process_at = [t.process_at for t in tasks]
    queues = [t.queue for t in tasks]
    priorities = [t.priority for t in tasks]
    if not set(map(type, priorities)) <= {int}:
        return None
    uniques = [t.unique for t in tasks]
    if uniques.count(None) != len(uniques) and not set(map(type, uniques)) <= {_NONE, Unique}:
        return None
    try:
        for value in set(queues):
            check_queue(value)
        for value in set(priorities):
            check_priority(value)
        for value in set(types):
            check_type(value)
        for value in set(tokens):
            check_token(value)
        for value in set(process_at):
            check_process_at(value)
        seconds = {value: check_delay(value) for value in set(delays)}
        attempts = {value: attempts_for(value, default_max_retry) for value in set(retries)}
    except (InvalidTask, TypeError):  # TypeError: an unhashable value, surely invalid
        return None
    return _Columns(
        types=types,
        payloads=payloads,
        tokens=tokens,
        delays=_normalised(delays, seconds),
        process_at=process_at,
        attempts=_normalised(retries, attempts),
        queues=queues,
        priorities=priorities,
        uniques=uniques,
    )


def _normalised(values: list[Any], normal: dict[Any, Any]) -> list[Any]:
    if len(normal) == 1:
        (only,) = normal.values()
        return [only] * len(values)
    return [normal[value] for value in values]


def with_trace(plan: BatchPlan, trace: str | None) -> BatchPlan:
    """The plan with every task carrying ``trace`` (a W3C carrier as JSON text), or as is."""
    if trace is None:
        return plan
    return replace(plan, params={**plan.params, "trace": trace})


def has_delay(plan: BatchPlan) -> bool:
    """Whether any task of the plan waits (a delay or a ``process_at``)."""
    p = plan.params
    delays = p["delays"] if p["delays"] is not None else [p["delay"]]
    ats = p["process_ats"] if p["process_ats"] is not None else [p["process_at"]]
    return any(d > 0 for d in delays) or any(t is not None for t in ats)
