"""Checks the client's arguments and plans list queries (no I/O here).

Theory of operation
-------------------
Every argument a `Client` method takes is checked here before any database work, so a bad
call raises `InvalidQuery` (or `TaskNotFound` for an id no task can have) and runs nothing.

`plan_list` turns `Client.list_tasks`'s keyword arguments into bound parameters plus a sort
key from a whitelist; the data layer maps that key to fixed SQL fragments.  Ordering is always
total: the sort column, then ``id`` in the same direction, so offset pagination is stable
while the table is unchanged.

Keyset pagination: a cursor records the order (column and direction) and the last row's
(sort value, id); the next page is the rows strictly after that pair.  It is stable under
inserts and deletes, needs no offset, and stays cheap deep into the table.  Filters are not in
the cursor: the caller passes the same ones again.  A cursor is opaque text (URL-safe base64
of a small JSON array, version first) so it survives a command line or a query string.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._checks import storable
from ._errors import InvalidQuery, TaskNotFound
from ._records import TaskSummary
from ._row import TaskStatus
from ._task import MAX_QUEUE_LENGTH

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_TASK_ID",
    "ORDER_FIELDS",
    "STATUS_NAMES",
    "Cursor",
    "ListPlan",
    "check_task_id",
    "check_type",
    "encode_cursor",
    "plan_list",
]

#: The columns `Client.list_tasks` can sort by.
ORDER_FIELDS: tuple[str, ...] = ("id", "created_at", "updated_at", "blocked_till")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
#: The largest id a task can have (a bigint); the CLI and the dashboard refuse larger ones.
MAX_TASK_ID = 2**63 - 1
_CURSOR_VERSION = 1
_MAX_CURSOR = 256  # characters; a real cursor is under 150
#: The status names, for messages that list them.
STATUS_NAMES = ", ".join(s.value for s in TaskStatus)


def check_task_id(task_id: object) -> int:
    """Return ``task_id`` if it can name a task.

    Raises:
        InvalidQuery: not an int.
        TaskNotFound: an int outside 1 .. 2**63-1 (no task can have it).
    """
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise InvalidQuery(f"a task id must be an int, got {task_id!r}")
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound(task_id)
    return task_id


def _no_nul(task_type: str) -> str:
    if "\x00" in task_type:
        raise InvalidQuery(f"invalid type {task_type!r}: task types cannot contain NUL characters")
    return task_type


def check_type(task_type: object) -> str | None:
    """Return a bulk operation's optional type filter, checked."""
    if task_type is not None and not isinstance(task_type, str):
        raise InvalidQuery(f"type must be a str or None, got {task_type!r}")
    return None if task_type is None else _no_nul(task_type)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded page cursor: the order it belongs to and the last row's sort key."""

    order_by: str
    descending: bool
    value: datetime | None
    id: int


def encode_cursor(order_by: str, descending: bool, last: TaskSummary) -> str:
    """The cursor for the page after ``last`` in this order."""
    value = None if order_by == "id" else getattr(last, order_by).isoformat()
    raw = json.dumps([_CURSOR_VERSION, order_by, descending, value, last.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> Cursor:
    if len(text) > _MAX_CURSOR:
        raise ValueError(text)
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    version, order_by, descending, value, last_id = json.loads(raw)
    if version != _CURSOR_VERSION or order_by not in ORDER_FIELDS:
        raise ValueError(version)
    if not isinstance(descending, bool) or isinstance(last_id, bool):
        raise TypeError(descending)
    when = None if order_by == "id" else datetime.fromisoformat(value)
    if when is not None and when.tzinfo is None:
        raise ValueError(value)
    return Cursor(order_by, descending, when, check_task_id(last_id))


def _decode_cursor(text: object) -> Cursor:
    if not isinstance(text, str):
        raise InvalidQuery(f"after must be a cursor string from TaskPage.next_cursor, got {text!r}")
    try:
        return _parse_cursor(text)
    except (ValueError, TypeError, RecursionError, binascii.Error, InvalidQuery, TaskNotFound):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise InvalidQuery(f"malformed page cursor {shown!r}") from None


@dataclass(frozen=True, slots=True)
class ListPlan:
    """A checked list query: bound parameters plus the whitelisted order and cursor use."""

    params: dict[str, Any]
    order_by: str
    descending: bool
    keyset: bool
    limit: int


def _as_list(value: object, name: str) -> list[Any] | None:
    """None and an empty collection mean no filter; a lone str or int is one value."""
    if value is None:
        return None
    if isinstance(value, str | int):
        return [value]
    if not isinstance(value, Iterable):
        raise InvalidQuery(f"{name} must be a collection, got {value!r}")
    values = list(value)
    return values or None


def _statuses(value: object) -> list[str] | None:
    items = _as_list(value, "statuses")
    if items is None:
        return None
    out: list[str] = []
    for item in items:
        try:
            out.append(TaskStatus(item).value)
        except ValueError:
            raise InvalidQuery(
                f"unknown status {item!r}: valid statuses are {STATUS_NAMES}"
            ) from None
    return out


def _types(value: object) -> list[str] | None:
    items = _as_list(value, "types")
    if items is not None and not all(isinstance(t, str) for t in items):
        raise InvalidQuery(f"types must be strings, got {items!r}")
    return None if items is None else [_no_nul(t) for t in items]


def _queues(value: object) -> list[str] | None:
    items = _as_list(value, "queues")
    if items is None:
        return None
    for item in items:
        if not isinstance(item, str):
            raise InvalidQuery(f"queues must be strings, got {items!r}")
        if not storable(item):
            what = "NUL characters" if "\x00" in item else "lone surrogates"
            raise InvalidQuery(f"invalid queue {item!r}: queue names cannot contain {what}")
        if not 0 < len(item) <= MAX_QUEUE_LENGTH:
            shown = item if len(item) <= 40 else f"{item[:40]}..."
            raise InvalidQuery(
                f"invalid queue {shown!r}: queue names are 1 to {MAX_QUEUE_LENGTH} characters long"
            )
    return items


def _ids(value: object) -> list[int] | None:
    items = _as_list(value, "ids")
    if items is None:
        return None
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_TASK_ID:
            raise InvalidQuery(f"task ids must be ints from 1 to 2**63-1, got {item!r}")
    return items


def _moment(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidQuery(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidQuery(
            f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got a naive datetime"
        )
    return value


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuery(f"{name} must be an int, got {value!r}")
    return value


def plan_list(
    *,
    statuses: object,
    types: object,
    ids: object,
    created_after: object,
    created_before: object,
    order_by: object,
    descending: object,
    limit: object,
    offset: object,
    after: object,
    queues: object = None,
    scheduled: object = False,
) -> ListPlan:
    """Check `Client.list_tasks`'s arguments and build its query plan.

    Raises:
        InvalidQuery: an argument cannot be used (the message says which and why).
    """
    if order_by not in ORDER_FIELDS:
        raise InvalidQuery(f"cannot order by {order_by!r}: choose one of {', '.join(ORDER_FIELDS)}")
    assert isinstance(order_by, str)
    if not isinstance(descending, bool):
        raise InvalidQuery(f"descending must be a bool, got {descending!r}")
    size = min(max(_int(limit, "limit"), 1), MAX_LIMIT)
    if not isinstance(scheduled, bool):
        raise InvalidQuery(f"scheduled must be a bool, got {scheduled!r}")
    skip = _int(offset, "offset")
    if skip < 0:
        raise InvalidQuery(f"offset must not be negative, got {skip}")
    if skip > MAX_TASK_ID:
        raise InvalidQuery(f"offset must be at most {MAX_TASK_ID}")
    wanted = _statuses(statuses)
    params: dict[str, Any] = {
        "statuses": wanted,
        # The one status asked for, if one: an equality lets the planner read a page of it in
        # id order from (status, id), where "= ANY(array)" would sort every match.
        "status": wanted[0] if wanted is not None and len(set(wanted)) == 1 else None,
        "types": _types(types),
        "queues": _queues(queues),
        "ids": _ids(ids),
        "created_after": _moment(created_after, "created_after"),
        "created_before": _moment(created_before, "created_before"),
        "scheduled": scheduled,
        "limit": size,
        "offset": skip,
    }
    keyset = after is not None
    if keyset:
        cursor = _decode_cursor(after)
        if (cursor.order_by, cursor.descending) != (order_by, descending):
            direction = "descending" if cursor.descending else "ascending"
            raise InvalidQuery(
                f"this cursor belongs to a list ordered by {cursor.order_by} {direction}: pass "
                "the same order_by and descending as the page it came from"
            )
        if skip:
            raise InvalidQuery("use either offset or after (a cursor), not both")
        params["after_value"] = cursor.value
        params["after_id"] = cursor.id
    return ListPlan(params, order_by, descending, keyset, size)
