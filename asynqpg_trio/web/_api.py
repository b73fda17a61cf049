"""The dashboard's JSON API: the Go dashboard's endpoints, envelope and error codes.

Theory of operation
-------------------
Each handler parses its input (`_params`; bad input is a 400 before any database work), makes
one `Client` call, and answers in the envelope ``{"data": ...}`` or
``{"data": null, "error": {"code", "message"}}``.  The client's errors map to status codes as
in the Go dashboard (`_STATE_ERRORS`); anything unexpected is logged with its traceback and
answered 500 ``internal_error`` without details.

Payloads: lists and the detail read each payload's size only; the detail then reads the
payload (in ``"show"`` mode) and the payload endpoint serves it only when it is at most
``max_payload_bytes`` long, so no request makes the dashboard hold more than that of one
payload (the action answers carry the row the write returned, payload included, shown only
within the limit).

Queues (ours alone: the Go dashboard has none): ``GET /api/queues`` lists them with their
counts, ``POST /api/queues/{name}/pause`` and ``/resume`` change one (the name is the rest of
the path, so it may hold a slash; a name no queue can have is 400 ``invalid_queue``), and
``GET /api/limits`` lists the cluster-wide limits.  Tasks carry ``queue`` and ``priority``,
and ``GET /api/tasks?queue=a,b`` filters by queue.

Also ours: ``GET /api/consumers`` lists the live consumers (the registry each keeps with its
heartbeat) with the tasks running under each one's lease; ``GET /api/schedules`` lists the
periodic schedules with their last and next fires; ``GET /api/tasks?scheduled=true`` lists
the pending tasks not due yet.

Differences from the Go dashboard, each fixing a flaw it has: a failed health check uses the
error envelope (503 ``database_unreachable``); ``by_type`` is sorted; task types are read
fresh (no 30 s cache); ids past 2**63-1 are refused; ``payloads="hide"`` also hides the
payload in the action responses, and ``payloads="deny"`` refuses the payload endpoint; lists
never read payloads, and a payload over the limit is refused (403 ``payload_too_large``);
every state-changing call needs the CSRF token and is refused in read-only mode.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

import psycopg
from starlette.responses import Response
from starlette.routing import Route

from .._core._consumers import consumer_document
from .._core._errors import (
    DuplicateTask,
    InvalidQuery,
    PayloadTooLarge,
    TaskAlreadyAvailable,
    TaskAlreadyFinalized,
    TaskNotFound,
    TaskRunning,
)
from .._core._version import __version__
from .._pg import _client_repo as client_repo
from .._pg._consumers_repo import list_consumers
from .._pg._schedules_repo import list_schedules
from ._params import (
    BadParam,
    detail_json,
    limits_json,
    list_query,
    queue_name,
    queues_json,
    schedule_json,
    stats_json,
    task_id,
    task_json,
    throughput_json,
)
from ._site import Access, Site, fail, ok

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from .._core._records import TaskRecord

__all__ = ["api_routes"]

logger = logging.getLogger("asynqpg_trio.web")

_STATE_ERRORS: Final = {
    TaskNotFound: (404, "task_not_found", "task not found"),
    TaskRunning: (409, "task_running", "task is currently running"),
    TaskAlreadyFinalized: (409, "task_already_finalized", "task is already in a terminal state"),
    TaskAlreadyAvailable: (
        409,
        "task_already_available",
        "task is already available for processing",
    ),
    DuplicateTask: (409, "duplicate_task", "another task holds this task's unique key"),
}


def _internal(action: str) -> Response:
    logger.exception("dashboard: failed to %s", action)
    return fail(500, "internal_error", f"failed to {action}")


class _Api:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.client = site.client

    def _show_payload(self) -> bool:
        return self.site.settings.payloads == "show"

    async def health(self, request: Request) -> Response:
        try:
            if self.site.pool.closed:
                raise psycopg.OperationalError("the dashboard's pool is closed")
            async with self.site.pool.connection() as conn:
                await client_repo.ping(conn)
        except (psycopg.Error, OSError):
            logger.warning("dashboard: health check failed", exc_info=True)
            return fail(503, "database_unreachable", "database unreachable")
        return ok({"status": "ok"})

    async def config(self, request: Request) -> Response:
        settings = self.site.settings
        return ok(
            {
                "prefix": self.site.base(request) or "/",
                "hide_payload_by_default": settings.payloads != "show",
                "payloads": settings.payloads,
                "max_payload_bytes": settings.max_payload_bytes,
                "version": __version__,
                "auth_mode": settings.auth_mode,
                "read_only": settings.read_only,
            }
        )

    async def csrf(self, request: Request) -> Response:
        return ok({"token": self.site.session(request).ensure_csrf()})

    async def stats(self, request: Request) -> Response:
        try:
            stats = await self.client.stats()
        except Exception:
            return _internal("get stats")
        return ok(stats_json(stats))

    async def throughput(self, request: Request) -> Response:
        try:
            minutes = await self.client.throughput(self.site.settings.throughput_minutes)
        except Exception:
            return _internal("get throughput")
        return ok(throughput_json(minutes))

    async def task_types(self, request: Request) -> Response:
        try:
            stats = await self.client.stats()
        except Exception:
            return _internal("get task types")
        return ok([t.type for t in stats.by_type])

    async def list_tasks(self, request: Request) -> Response:
        try:
            query = list_query(request.query_params)
            page = await self.client.list_tasks(**query.kwargs)
        except (BadParam, InvalidQuery) as ex:
            return fail(400, "invalid_params", str(ex))
        except Exception:
            return _internal("list tasks")
        return ok(
            {
                "tasks": [task_json(t) for t in page.tasks],
                "total": page.total,
                "next_cursor": page.next_cursor,
            }
        )

    async def _one(
        self, request: Request, action: str, run: Callable[[int], Awaitable[Response]]
    ) -> Response:
        try:
            ident = task_id(request.path_params["id"])
        except BadParam as ex:
            return fail(400, "invalid_id", str(ex))
        try:
            return await run(ident)
        except (
            TaskNotFound,
            TaskRunning,
            TaskAlreadyFinalized,
            TaskAlreadyAvailable,
            DuplicateTask,
        ) as ex:
            status, code, message = _STATE_ERRORS[type(ex)]
            return fail(status, code, message)
        except Exception:
            return _internal(action)

    def _write(
        self, call: Callable[[int], Awaitable[TaskRecord]]
    ) -> Callable[[int], Awaitable[Response]]:
        async def run(ident: int) -> Response:
            task = await call(ident)
            settings = self.site.settings
            shown = self._show_payload() and settings.payload_fits(task.payload_size)
            return ok(detail_json(task, task.payload if shown else None))

        return run

    async def _detail(self, ident: int) -> Response:
        task = await self.client.get_task_summary(ident)
        payload = None
        if self._show_payload() and task.payload_size > 0:
            payload = await self._payload_within_limit(ident)
        return ok(detail_json(task, payload))

    async def _payload_within_limit(self, ident: int) -> bytes | None:
        try:
            return await self.client.get_payload(
                ident, max_bytes=self.site.settings.max_payload_bytes
            )
        except PayloadTooLarge:
            return None

    async def _raw(self, ident: int) -> Response:
        limit = self.site.settings.max_payload_bytes
        try:
            payload = await self.client.get_payload(ident, max_bytes=limit)
        except PayloadTooLarge as ex:
            return fail(
                403,
                "payload_too_large",
                f"the payload is {ex.size} bytes, more than this dashboard serves ({limit} bytes)",
            )
        return _raw_payload(payload)

    async def get_task(self, request: Request) -> Response:
        return await self._one(request, "get task", self._detail)

    async def payload(self, request: Request) -> Response:
        if self.site.settings.payloads == "deny":
            return fail(403, "payload_denied", "payloads are not shown by this dashboard")
        return await self._one(request, "get task payload", self._raw)

    async def retry(self, request: Request) -> Response:
        return await self._one(request, "retry task", self._write(self.client.retry_task))

    async def cancel(self, request: Request) -> Response:
        return await self._one(request, "cancel task", self._write(self.client.cancel_task))

    async def delete(self, request: Request) -> Response:
        return await self._one(request, "delete task", self._write(self.client.delete_task))

    async def _bulk_type(self, request: Request) -> tuple[str | None, Response | None]:
        body = await request.body()
        if not body.strip():
            return None, None
        try:
            data: Any = json.loads(body)
        except (ValueError, RecursionError):
            data = ...
        if not isinstance(data, dict) or not isinstance(data.get("type"), str | None):
            return None, fail(400, "invalid_body", "invalid request body")
        task_type: str | None = data.get("type") or None
        if task_type is not None and "\x00" in task_type:
            message = "invalid request body: task types cannot contain NUL characters"
            return None, fail(400, "invalid_body", message)
        return task_type, None

    async def bulk_retry(self, request: Request) -> Response:
        task_type, refusal = await self._bulk_type(request)
        if refusal is not None:
            return refusal
        try:
            affected = await self.client.retry_failed(task_type)
        except Exception:
            return _internal("bulk retry tasks")
        return ok({"affected": affected})

    async def bulk_delete(self, request: Request) -> Response:
        task_type, refusal = await self._bulk_type(request)
        if refusal is not None:
            return refusal
        try:
            affected = await self.client.delete_failed(task_type)
        except Exception:
            return _internal("bulk delete tasks")
        return ok({"affected": affected})

    async def queues(self, request: Request) -> Response:
        try:
            queues = await self.client.queues()
        except Exception:
            return _internal("list queues")
        return ok(queues_json(queues))

    async def limits(self, request: Request) -> Response:
        try:
            limits = await self.client.limits()
        except Exception:
            return _internal("list limits")
        return ok(limits_json(limits))

    async def _queue_action(self, request: Request, pause: bool) -> Response:
        try:
            name = queue_name(request.path_params["name"])
        except BadParam as ex:
            return fail(400, "invalid_queue", str(ex))
        try:
            if pause:
                changed = await self.client.pause_queue(name)
            else:
                changed = await self.client.resume_queue(name)
        except Exception:
            return _internal("pause queue" if pause else "resume queue")
        return ok({"queue": name, "paused": pause, "changed": changed})

    async def pause_queue(self, request: Request) -> Response:
        return await self._queue_action(request, pause=True)

    async def resume_queue(self, request: Request) -> Response:
        return await self._queue_action(request, pause=False)

    async def consumers(self, request: Request) -> Response:
        try:
            async with self.site.pool.connection() as conn:
                rows = await list_consumers(conn)
        except Exception:
            return _internal("list consumers")
        return ok([consumer_document(r) for r in rows])

    async def schedules(self, request: Request) -> Response:
        try:
            async with self.site.pool.connection() as conn:
                rows = await list_schedules(conn)
        except Exception:
            return _internal("list schedules")
        return ok([schedule_json(r) for r in rows])


def _raw_payload(payload: bytes) -> Response:
    media = "application/octet-stream"
    if payload:
        try:
            json.loads(payload)
            media = "application/json"
        except (ValueError, RecursionError):
            pass
    return Response(payload, 200, media_type=media)


def api_routes(site: Site) -> list[Route]:
    """The ``/api/...`` routes (paths relative to the prefix)."""
    api = _Api(site)
    read, write, public = Access.READ, Access.WRITE, Access.PUBLIC
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], Access, str]] = [
        ("/api/health", api.health, public, "GET"),
        ("/api/config", api.config, public, "GET"),
        ("/api/csrf", api.csrf, read, "GET"),
        ("/api/stats", api.stats, read, "GET"),
        ("/api/throughput", api.throughput, read, "GET"),
        ("/api/task-types", api.task_types, read, "GET"),
        ("/api/tasks", api.list_tasks, read, "GET"),
        ("/api/tasks/bulk/retry", api.bulk_retry, write, "POST"),
        ("/api/tasks/bulk/delete", api.bulk_delete, write, "POST"),
        ("/api/tasks/{id}", api.get_task, read, "GET"),
        ("/api/tasks/{id}", api.delete, write, "DELETE"),
        ("/api/tasks/{id}/payload", api.payload, read, "GET"),
        ("/api/tasks/{id}/retry", api.retry, write, "POST"),
        ("/api/tasks/{id}/cancel", api.cancel, write, "POST"),
        ("/api/queues", api.queues, read, "GET"),
        ("/api/queues/{name:path}/pause", api.pause_queue, write, "POST"),
        ("/api/queues/{name:path}/resume", api.resume_queue, write, "POST"),
        ("/api/limits", api.limits, read, "GET"),
        ("/api/consumers", api.consumers, read, "GET"),
        ("/api/schedules", api.schedules, read, "GET"),
    ]
    return [
        Route(path, site.endpoint(handler, access), methods=[method])
        for path, handler, access, method in table
    ]
