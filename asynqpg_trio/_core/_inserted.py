"""What an insert did, mapped back to its inputs, and where to find a skipped input's holder.

`read_result` turns the rows the insert returned into one entry per input, in input order;
`holders` says where to look for the task holding a skipped input's place.  No I/O here.

Mapping rule: the insert runs ``ORDER BY ord`` so ids grow with input position.  When no task
has a token every task is inserted and the statement returns only the ids, in id order, one per
input.  Otherwise a task with a token is matched by (type, token); only the first input of a
(type, token) pair inside a batch can get an id, later copies get None; the returned
token-less rows, in id order, belong to the token-less inputs in input order.  A batch with a
unique task (`Unique`) takes its own statement, which draws every input's id up front and
returns one row per input, in input order: the id (NULL when skipped as a duplicate) and the
unique window the database computed; batches without one never pay for it.

Duplicates: an input that got no id was skipped because its token or unique slot is held;
`holders` says how to look the holder up, token first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._errors import DuplicateTask

if TYPE_CHECKING:
    from ._enqueue import BatchPlan

__all__ = ["ENQUEUE_ATTEMPTS", "Holder", "Inserted", "holders", "read_result"]

#: Inserts `Producer.enqueue` tries before giving up, when each time the holder of the task's
#: token or unique key leaves before it can be looked up (each retry needs another transaction
#: to have freed the place in between: more than one is already rare).
ENQUEUE_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Inserted:
    """What an insert did: one entry per input, and how many tasks of each type it inserted.

    ``windows``: for a batch with unique tasks, each input's unique window (None without a
    period), as the database computed it; else None.
    """

    ids: list[int | None]
    counts: dict[str, int]
    windows: list[datetime | None] | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """Where to look for the task that holds a skipped input's place: the task of
    ``task_type`` with ``token``, or the one holding the unique slot (``unique_key``,
    ``window``)."""

    task_type: str
    token: str | None = None
    unique_key: str | None = None
    window: datetime | None = None

    def duplicate(self, existing_id: int) -> DuplicateTask:
        """The error reporting that ``existing_id`` holds the place."""
        return DuplicateTask(self.task_type, self.token, existing_id, unique_key=self.unique_key)


def read_result(plan: BatchPlan, rows: Sequence[tuple[Any, ...]]) -> Inserted:
    """Map the insert's rows back to the inputs.

    ``rows`` is, without tokens, one row whose first value is the array of new ids (NULL for
    none); with tokens, one (id, type, token) row per inserted task, in id order; with unique
    tasks, one (id or NULL, window) row per input, in input order.
    """
    if plan.unique_keys is not None:
        if len(rows) != len(plan.types):
            raise RuntimeError("the insert returned another number of rows than it was given")
        ids = [None if row[0] is None else int(row[0]) for row in rows]
        counts = Counter(t for i, t in zip(ids, plan.types, strict=True) if i is not None)
        return Inserted(ids=ids, counts=dict(counts), windows=[row[1] for row in rows])
    if plan.keys is None:
        ((ids, _),) = rows
        if ids is None or len(ids) != len(plan.types):
            raise RuntimeError("the insert returned another number of ids than it was given")
        return Inserted(ids=ids, counts=_all_counted(plan))
    counts = Counter(str(row[1]) for row in rows)
    return Inserted(ids=_map_tokened(plan.keys, rows), counts=dict(counts))


def _all_counted(plan: BatchPlan) -> dict[str, int]:
    """Tasks per type when every input was inserted (one type bound as a scalar: no count)."""
    task_type = plan.params.get("type")
    if task_type is not None:
        return {task_type: len(plan.types)}
    return dict(Counter(plan.types))


def _map_tokened(
    keys: tuple[tuple[str, str] | None, ...], rows: Sequence[tuple[Any, ...]]
) -> list[int | None]:
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
    for key in keys:
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


def holders(plan: BatchPlan, inserted: Inserted, index: int) -> list[Holder]:
    """Where to look for the holder of input ``index``'s place, when it got no id: its
    (type, token) first, then its unique slot; empty for an input with neither."""
    found: list[Holder] = []
    if plan.keys is not None and (key := plan.keys[index]) is not None:
        found.append(Holder(key[0], token=key[1]))
    if plan.unique_keys is not None and (unique_key := plan.unique_keys[index]) is not None:
        window = None if inserted.windows is None else inserted.windows[index]
        found.append(Holder(plan.types[index], unique_key=unique_key, window=window))
    return found
