"""The dashboard's HTML pages: overview, task list (and dead letters, scheduled), task detail,
queues, consumers, schedules, login.

Theory of operation
-------------------
Pages are rendered on the server with Jinja2 from the same `Client` calls as the JSON API;
every URL in them is built from the request's base path, so they work under any prefix.  The
part of a page that changes sits in ``<main id="live">``; ``static/dashboard.js`` re-fetches
the page every few seconds and swaps that element (and the CSRF token) in place, and runs the
action buttons through the JSON API with the CSRF header, and shows times relative to now
("3 min ago", the absolute UTC time on hover) from each ``<time datetime>``.  In read-only
mode the buttons are not rendered at all (the queues page's Pause and Resume included).  Bad
filters are shown on the page, answered 400 as the API answers them; an unexpected failure
(the database is down) is logged and shown as an error page (500) in the dashboard's own
layout, never as a bare "Internal Server Error".
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .._core._consumers import consumer_document
from .._core._errors import InvalidQuery, PayloadTooLarge, TaskNotFound
from .._core._history import headline, timeline
from .._core._listing import ORDER_FIELDS
from .._core._queues import Limit
from .._core._records import TaskPage
from .._core._row import TaskStatus
from .._core._views import describe_limit, format_age, format_utc, queue_document
from .._pg._consumers_repo import list_consumers, message_stamps
from .._pg._schedules_repo import list_schedules
from ._auth import OAuth
from ._oauth import safe_next
from ._params import BadParam, list_query, task_id
from ._site import Access, Handler, Site

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

__all__ = ["make_templates", "page_routes"]

logger = logging.getLogger("asynqpg_trio.web")

HERE: Final = Path(__file__).parent
PAGE_SIZES: Final = (25, 50, 100)
STATUSES: Final = tuple(s.value for s in TaskStatus)
_LOGIN_ERRORS: Final = {
    "invalid_state": "The login took too long or was started elsewhere. Please try again.",
    "provider_error": "The provider did not complete the login.",
    "forbidden": "This account may not use the dashboard.",
}


def _age(seconds: float | None) -> str:
    return format_age(seconds, sep=" ")


def _limit(limit: Limit) -> str:
    return describe_limit(limit.max_running, limit.rate, limit.per, limit.burst)


def make_templates() -> Jinja2Templates:
    """The page templates, with the ``when``, ``age`` and ``limit`` filters."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_utc
    env.filters["age"] = _age
    env.filters["limit"] = _limit
    env.filters["headline"] = headline
    return Jinja2Templates(env=env)


def _pretty(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _utc_inputs(query: Mapping[str, str]) -> dict[str, str]:
    """The query with datetime-local values (no offset) read as UTC."""
    out = dict(query)
    for name in ("created_after", "created_before"):
        text = out.get(name, "").strip()
        try:
            moment = datetime.fromisoformat(text) if text else None
        except ValueError:
            continue
        if moment is not None and moment.tzinfo is None:
            out[name] = moment.replace(tzinfo=UTC).isoformat()
    return out


class _Pages:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.client = site.client

    def _render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        settings = self.site.settings
        session = self.site.session(request)
        context.update(
            base=self.site.base(request),
            title=settings.title,
            csrf=session.ensure_csrf(),
            read_only=settings.read_only,
            auth_mode=settings.auth_mode,
            user=session.user,
            refresh_ms=int(settings.refresh_seconds * 1000),
            payloads=settings.payloads,
        )
        return self.site.templates.TemplateResponse(
            request, name, context, status_code=status, headers={"Cache-Control": "no-store"}
        )

    def guarded(self, page: Handler) -> Handler:
        """``page``, answering an unexpected failure with the error page (logged)."""

        async def run(request: Request) -> Response:
            try:
                return await page(request)
            except Exception:
                logger.exception("dashboard: failed to render %s", request.url.path)
                message = "The dashboard could not load this page; its log has the details."
                return self._render(
                    request, "error.html", {"page": "error", "message": message}, 500
                )

        run.__name__ = getattr(page, "__name__", "page")
        return run

    async def overview(self, request: Request) -> Response:
        stats = await self.client.stats()
        minutes = await self.client.throughput(self.site.settings.throughput_minutes)
        ages = [t.oldest_pending_age for t in stats.by_type if t.oldest_pending_age is not None]
        peak = max((m.completed + m.failed for m in minutes), default=0)
        context = {
            "page": "overview",
            "stats": stats,
            "statuses": STATUSES,
            "minutes": minutes,
            "peak": max(peak, 1),
            "finished": sum(m.completed + m.failed for m in minutes),
            "oldest_pending": max(ages, default=None),
        }
        return self._render(request, "overview.html", context)

    async def scheduled(self, request: Request) -> Response:
        return await self.tasks(request, scheduled=True)

    async def tasks(self, request: Request, *, scheduled: bool = False) -> Response:
        raw = _utc_inputs(request.query_params)
        defaults: dict[str, Any] = {"default_limit": 25, "default_order": "DESC"}
        if scheduled:
            raw = {**raw, "scheduled": "true"}
            defaults = {"default_limit": 25, "default_order_by": "blocked_till"}
        error = None
        try:
            query = list_query(raw, **defaults)
            page = await self.client.list_tasks(**query.kwargs)
        except (BadParam, InvalidQuery) as ex:
            error = str(ex)
            query = list_query({"scheduled": "true"} if scheduled else {}, **defaults)
            page = TaskPage(tasks=(), total=0, next_cursor=None)
        stats = await self.client.stats()
        queues = await self.client.queues()
        statuses = query.kwargs["statuses"] or []
        current = {k: v for k, v in request.query_params.items() if v}

        path = "/scheduled" if scheduled else "/tasks"

        def link(**changes: object) -> str:
            merged = {**current, **{k: str(v) for k, v in changes.items()}}
            return f"{self.site.base(request)}{path}?{urlencode(merged)}"

        page_name = "dead" if statuses == ["failed"] else "tasks"
        context = {
            "page": "scheduled" if scheduled else page_name,
            "scheduled": scheduled,
            "path": path,
            "dead_letters": statuses == ["failed"] and not scheduled,
            "tasks": page.tasks,
            "total": page.total,
            "query": query,
            "error": error,
            "form": request.query_params,
            "status_filter": ",".join(statuses),
            "type_filter": ",".join(query.kwargs["types"] or []),
            "types": [t.type for t in stats.by_type],
            "queue_filter": ",".join(query.kwargs["queues"] or []),
            "queues": [q.name for q in queues],
            "statuses": STATUSES,
            "page_sizes": PAGE_SIZES,
            "order_fields": ORDER_FIELDS,
            "link": link,
        }
        return self._render(request, "tasks.html", context, 400 if error else 200)

    async def task(self, request: Request) -> Response:
        settings = self.site.settings
        try:
            ident = task_id(request.path_params["id"])
            task = await self.client.get_task_summary(ident)
            fits = settings.payload_fits(task.payload_size)
            payload = b""
            if settings.payloads == "show" and task.payload_size and fits:
                payload = await self.client.get_payload(ident, max_bytes=settings.max_payload_bytes)
        except (BadParam, TaskNotFound) as ex:
            missing = {"page": "tasks", "message": str(ex)}
            return self._render(request, "missing.html", missing, status=404)
        except PayloadTooLarge:
            fits = False
        async with self.site.pool.connection() as conn:
            stamps = await message_stamps(conn, ident)
        times, starts = stamps if stamps is not None else ([], [])
        context: dict[str, Any] = {
            "page": "tasks",
            "task": task,
            "events": timeline(task, times, starts),
            "payload_fits": fits,
            "max_payload": settings.max_payload_bytes,
            "payload_text": _pretty(payload) if payload else "",
        }
        return self._render(request, "task.html", context)

    async def queues(self, request: Request) -> Response:
        queues = await self.client.queues()
        limits = await self.client.limits()
        context = {
            "page": "queues",
            "queues": [queue_document(q) for q in queues],
            "limits": limits,
            "queue_limits": {lim.name: lim for lim in limits if lim.scope == "queue"},
            "statuses": STATUSES,
        }
        return self._render(request, "queues.html", context)

    async def consumers(self, request: Request) -> Response:
        async with self.site.pool.connection() as conn:
            rows = await list_consumers(conn)
        context = {"page": "consumers", "consumers": [consumer_document(r) for r in rows]}
        return self._render(request, "consumers.html", context)

    async def schedules(self, request: Request) -> Response:
        async with self.site.pool.connection() as conn:
            rows = await list_schedules(conn)
        return self._render(request, "schedules.html", {"page": "schedules", "schedules": rows})

    async def login(self, request: Request) -> Response:
        auth = self.site.settings.auth
        base = self.site.base(request)
        if not isinstance(auth, OAuth):
            return RedirectResponse(f"{base}/", 302)
        target = safe_next(base, request.query_params.get("next"))
        context = {
            "page": "login",
            "providers": [
                (p, f"{base}/api/auth/login/{p.id}?{urlencode({'next': target})}")
                for p in auth.providers
            ],
            "error": _LOGIN_ERRORS.get(request.query_params.get("error", "")),
        }
        return self._render(request, "login.html", context)


def page_routes(site: Site) -> list[Route]:
    """The HTML routes (paths relative to the prefix)."""
    pages = _Pages(site)
    read = Access.READ
    return [
        Route("/", site.endpoint(pages.guarded(pages.overview), read, page=True)),
        Route("/tasks", site.endpoint(pages.guarded(pages.tasks), read, page=True)),
        Route("/tasks/{id}", site.endpoint(pages.guarded(pages.task), read, page=True)),
        Route("/scheduled", site.endpoint(pages.guarded(pages.scheduled), read, page=True)),
        Route("/queues", site.endpoint(pages.guarded(pages.queues), read, page=True)),
        Route("/consumers", site.endpoint(pages.guarded(pages.consumers), read, page=True)),
        Route("/schedules", site.endpoint(pages.guarded(pages.schedules), read, page=True)),
        Route("/login", site.endpoint(pages.guarded(pages.login), Access.PUBLIC, page=True)),
    ]
