"""Enqueue planning shared by the async producer and the sync twin (no I/O here).

`plan_batch` validates a batch (all or nothing) and builds the insert's parameter arrays;
`map_results` turns the rows the insert returned into one entry per input, in input order.

Mapping rule: the insert runs ``ORDER BY ord`` so ids grow with input position.  A task with a
token is matched by (type, token); only the first input of a (type, token) pair inside a batch
can get an id, later copies get None.  Tasks without a token are always inserted, so the
returned token-less rows, in id order, belong to the token-less inputs in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidTask
from ._task import MAX_ATTEMPTS, ValidTask, validate_task

__all__ = [
    "BatchPlan",
    "check_default_max_retry",
    "has_delay",
    "map_results",
    "plan_batch",
    "with_trace",
]


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A validated batch: the insert's parameters and what is needed to map results back."""

    params: dict[str, list[Any]]
    keys: tuple[tuple[str, str] | None, ...]


def check_default_max_retry(value: int) -> int:
    """Validate a producer's ``default_max_retry``."""
    from ._errors import ConfigurationError

    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATTEMPTS:
        raise ConfigurationError(
            f"default_max_retry must be an int between 0 and {MAX_ATTEMPTS}, got {value!r}"
        )
    return value


def plan_batch(
    tasks: Sequence[Any], default_max_retry: int, traces: Sequence[Any] | None = None
) -> BatchPlan:
    """Validate every task (raising `InvalidTask` with the index of the first bad one)."""
    valid: list[ValidTask] = []
    for index, task in enumerate(tasks):
        try:
            valid.append(validate_task(task, default_max_retry))
        except InvalidTask as ex:
            raise InvalidTask(str(ex), index=index) from None
    params: dict[str, list[Any]] = {
        "types": [v.type for v in valid],
        "payloads": [v.payload for v in valid],
        "tokens": [v.token for v in valid],
        "delays": [v.delay for v in valid],
        "process_at": [v.process_at for v in valid],
        "attempts": [v.attempts for v in valid],
        "traces": list(traces) if traces is not None else [None] * len(valid),
    }
    keys = tuple(None if v.token is None else (v.type, v.token) for v in valid)
    return BatchPlan(params=params, keys=keys)


def with_trace(plan: BatchPlan, trace: str | None) -> BatchPlan:
    """The plan with every task carrying ``trace`` (a W3C carrier as JSON text), or as is."""
    if trace is None:
        return plan
    return BatchPlan(params={**plan.params, "traces": [trace] * len(plan.keys)}, keys=plan.keys)


def has_delay(plan: BatchPlan) -> bool:
    """Whether any task of the plan waits (a delay or a ``process_at``)."""
    p = plan.params
    return any(d > 0 for d in p["delays"]) or any(t is not None for t in p["process_at"])


def map_results(plan: BatchPlan, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
    """One entry per input: the new id, or None for a duplicate that was skipped."""
    by_key: dict[tuple[str, str], int] = {}
    untokened: list[int] = []
    for task_id, task_type, token in rows:
        if token is None:
            untokened.append(int(task_id))
        else:
            by_key[(task_type, token)] = int(task_id)
    results: list[int | None] = []
    taken: set[tuple[str, str]] = set()
    position = 0
    for key in plan.keys:
        if key is None:
            results.append(untokened[position])
            position += 1
        elif key in by_key and key not in taken:
            taken.add(key)
            results.append(by_key[key])
        else:
            results.append(None)
    if position != len(untokened):
        raise RuntimeError("the insert returned more token-less rows than it was given")
    return results
