"""The dashboard's request parsing and JSON shapes (pure: no I/O, no clock).

Theory of operation
-------------------
`task_id`, `queue_name` and `list_query` turn URL text into the arguments `Client` methods
take, with the Go dashboard's rules and messages; a violation raises `BadParam`, which the API
answers with 400 (``invalid_id``, ``invalid_queue`` or ``invalid_params``) and the pages show
inline.  A queue filter (``?queue=a,b``) is passed on as it is: `Client.list_tasks` refuses a
name no queue can have with `InvalidQuery`, answered like a bad parameter.  Unlike the Go code, an
id past 2**63-1 is refused instead of wrapping around.

The ``*_json`` functions build the Go dashboard's JSON objects from the client's frozen
values.  Times are RFC 3339 in UTC with a ``Z``.  Payloads are text (invalid UTF-8 replaced)
in detail objects and absent from list items, which give only ``payload_size`` (lists never
read payloads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .._core._checks import storable
from .._core._listing import MAX_LIMIT, MAX_TASK_ID, ORDER_FIELDS
from .._core._queues import Limit, QueueInfo
from .._core._records import QueueStats, TaskRecord, TaskSummary, ThroughputMinute
from .._core._row import TaskStatus
from .._core._schedule_rows import ScheduleRow
from .._core._task import MAX_QUEUE_LENGTH
from .._core._views import limit_document, queue_document, split_csv, stats_document

__all__ = [
    "BadParam",
    "ListQuery",
    "detail_json",
    "limits_json",
    "list_query",
    "queue_name",
    "queues_json",
    "schedule_json",
    "stats_json",
    "task_id",
    "task_json",
    "throughput_json",
    "timestamp",
]

_STATUSES: Final = frozenset(s.value for s in TaskStatus)


class BadParam(ValueError):
    """A query parameter or path segment the dashboard cannot use; the message says why."""


def _number(text: str) -> int | None:
    """ASCII digits as an int, capped at 2**63 (never converts an unbounded string); else
    None."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return MAX_TASK_ID + 1 if len(digits) > 19 else min(int(digits), MAX_TASK_ID + 1)


def task_id(text: str) -> int:
    """A task id from a URL: ASCII digits naming 1 .. 2**63-1."""
    if not text:
        raise BadParam("missing task id")
    number = _number(text)
    if number is None or not 1 <= number <= MAX_TASK_ID:
        raise BadParam(f"invalid task id: {text}")
    return number


def queue_name(text: str) -> str:
    """A queue name from a URL: 1 to `MAX_QUEUE_LENGTH` characters of text a ``text`` column
    holds (no NUL)."""
    if not 0 < len(text) <= MAX_QUEUE_LENGTH or not storable(text):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise BadParam(
            f"invalid queue name {shown!r}: 1 to {MAX_QUEUE_LENGTH} characters, without NUL"
        )
    return text


def _when(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name, "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in text.upper():
        raise BadParam(f"{name} must be a valid RFC3339 timestamp")
    return moment


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A checked task-list request: `kwargs` go to `Client.list_tasks` as they are."""

    kwargs: dict[str, Any]

    @property
    def limit(self) -> int:
        """The page size asked for (after clamping)."""
        return int(self.kwargs["limit"])

    @property
    def offset(self) -> int:
        """The rows skipped."""
        return int(self.kwargs["offset"])


def list_query(
    query: Mapping[str, str],
    *,
    default_limit: int = 100,
    default_order_by: str = "id",
    default_order: str = "ASC",
) -> ListQuery:
    """Check ``GET /api/tasks``'s parameters (the Go rules) and build the list arguments.

    Raises:
        BadParam: a parameter breaks its rule; the message is the Go dashboard's.
    """
    limit_text = query.get("limit", "").strip()
    limit = default_limit
    if limit_text:
        number = _number(limit_text)
        if number is None or number < 1:
            raise BadParam("limit must be a positive integer")
        limit = min(number, MAX_LIMIT)
    offset_text = query.get("offset", "").strip()
    offset = 0
    if offset_text:
        number = _number(offset_text)
        if number is None:
            raise BadParam("offset must be a non-negative integer")
        if number > MAX_TASK_ID:
            raise BadParam(f"offset must be at most {MAX_TASK_ID}")
        offset = number
    statuses = split_csv(query.get("status", ""))
    for status in statuses:
        if status not in _STATUSES:
            raise BadParam(f"invalid status: {status}")
    ids: list[int] = []
    for item in split_csv(query.get("id", "")):
        try:
            ids.append(task_id(item))
        except BadParam:
            raise BadParam(f"invalid task id: {item}") from None
    order_by = query.get("order_by", "").strip() or default_order_by
    if order_by not in ORDER_FIELDS:
        raise BadParam(f"invalid order_by field: {order_by}")
    order = (query.get("order", "").strip() or default_order).upper()
    if order not in ("ASC", "DESC"):
        raise BadParam("order must be ASC or DESC")
    scheduled_text = query.get("scheduled", "").strip().lower()
    if scheduled_text not in ("", "true", "false", "1", "0"):
        raise BadParam("scheduled must be true or false")
    kwargs: dict[str, Any] = {
        "statuses": statuses or None,
        "types": split_csv(query.get("type", "")) or None,
        "queues": split_csv(query.get("queue", "")) or None,
        "ids": ids or None,
        "created_after": _when(query, "created_after"),
        "created_before": _when(query, "created_before"),
        "scheduled": scheduled_text in ("true", "1"),
        "order_by": order_by,
        "descending": order == "DESC",
        "limit": limit,
        "offset": offset,
    }
    after = query.get("after", "").strip()
    if after:
        kwargs["after"] = after
    return ListQuery(kwargs)


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_json(task: TaskRecord | TaskSummary) -> dict[str, Any]:
    """A task as the Go dashboard's TaskListItem (no ``payload`` key, ``payload_size``),
    plus its ``queue`` and ``priority``."""
    return {
        "id": task.id,
        "type": task.type,
        "queue": task.queue,
        "priority": task.priority,
        "status": task.status.value,
        "idempotency_token": task.idempotency_token,
        "messages": list(task.messages),
        "blocked_till": timestamp(task.blocked_till),
        "attempts_left": task.attempts_left,
        "attempts_elapsed": task.attempts_elapsed,
        "created_at": timestamp(task.created_at),
        "updated_at": timestamp(task.updated_at),
        "finalized_at": timestamp(task.finalized_at),
        "attempted_at": timestamp(task.attempted_at),
        "lease_owner": task.lease_owner,
        "payload_size": task.payload_size,
    }


def detail_json(task: TaskRecord | TaskSummary, payload: bytes | None) -> dict[str, Any]:
    """A task as the Go dashboard's TaskDetail.

    Args:
        task: the task.
        payload: the payload to show as text, or None to send ``"payload": null`` (hidden,
            over the size limit, or empty).
    """
    text = payload.decode("utf-8", "replace") if payload else None
    return task_json(task) | {"payload": text}


def stats_json(stats: QueueStats) -> dict[str, Any]:
    """The Go dashboard's stats object, ``by_type`` sorted by type, plus queue lag."""
    ages = [t.oldest_pending_age for t in stats.by_type if t.oldest_pending_age is not None]
    return stats_document(stats) | {"oldest_pending_age": max(ages, default=None)}


def throughput_json(minutes: tuple[ThroughputMinute, ...]) -> list[dict[str, Any]]:
    """Per-minute completed and failed counts, oldest first."""
    return [
        {"minute": timestamp(m.minute), "completed": m.completed, "failed": m.failed}
        for m in minutes
    ]


def queues_json(queues: tuple[QueueInfo, ...]) -> list[dict[str, Any]]:
    """The queues, by name: paused or not, counts with every status, queue lag."""
    return [queue_document(q) for q in queues]


def limits_json(limits: tuple[Limit, ...]) -> list[dict[str, Any]]:
    """The cluster-wide limits, by scope and name, with their running tasks."""
    return [limit_document(lim) for lim in limits]


def schedule_json(row: ScheduleRow) -> dict[str, Any]:
    """A periodic schedule: its declaration, last and next fires (RFC 3339 UTC)."""
    return {
        "name": row.name,
        "type": row.type,
        "spec": row.spec,
        "timezone": row.timezone,
        "catch_up": row.catch_up,
        "last_fire": timestamp(row.last_fire),
        "next_fire": timestamp(row.next_fire),
        "updated_at": timestamp(row.updated_at),
    }
