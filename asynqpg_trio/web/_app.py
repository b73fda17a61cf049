"""The dashboard's application factory and its Hypercorn (Trio worker) server.

Theory of operation
-------------------
`create_app` checks its options, then assembles a Starlette application: the JSON API, the
OAuth routes (OAuth mode only), the pages and the static files, all mounted under the prefix
(Starlette's ``Mount`` sets the ASGI ``root_path``, from which every URL and cookie path is
built).  A path that misses only by a trailing slash is redirected with a relative
``Location`` (Starlette's own redirect is absolute, built from the ``Host`` header).
Starlette runs on Trio through anyio, so the handlers use the Trio-native pool and `Client`
directly.  A pool made from a DSN belongs to the app's `Client` and is closed at lifespan
shutdown; a pool passed in stays the caller's.

`serve_dashboard` runs the app on Hypercorn's Trio worker until cancelled, reporting the
bound URL through ``task_status`` (so ``port=0`` picks a free port).  Cancelling it closes
the listeners and drops open connections.
"""

from __future__ import annotations

import re
import secrets
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from .._api._client import Client
from .._api._owner import pool_of
from .._core._errors import ConfigurationError
from .._pg._pool import Pool
from ._api import api_routes
from ._auth import BasicAuth, OAuth
from ._headers import SecurityHeaders
from ._oauth import oauth_routes
from ._pages import make_templates, page_routes
from ._session import SessionCodec
from ._site import PayloadMode, Settings, Site, fail

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

__all__ = ["create_app", "serve_dashboard"]

_STATIC: Final = Path(__file__).parent / "static"
_PREFIX: Final = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def _prefix(prefix: str) -> str:
    cleaned = prefix.strip().rstrip("/")
    if cleaned and not cleaned.startswith("/"):
        cleaned = f"/{cleaned}"
    if not _PREFIX.match(cleaned) or any(p in (".", "..") for p in cleaned.split("/")):
        raise ConfigurationError(
            f"prefix must be a URL path like /asynqpg (letters, digits, . _ ~ -), got {prefix!r}"
        )
    return cleaned


def _secret(secret_key: str | bytes | None) -> bytes:
    if secret_key is None:
        return secrets.token_bytes(32)
    key = secret_key.encode("utf-8") if isinstance(secret_key, str) else bytes(secret_key)
    if len(key) < 16:
        raise ConfigurationError("secret_key must be at least 16 bytes long")
    return key


def _routable(routes: list[BaseRoute], scope: Scope) -> bool:
    for route in routes:
        match, child = route.matches(scope)
        if isinstance(route, Mount):
            if match is Match.FULL and _routable(route.routes, {**scope, **child}):
                return True
        elif match is not Match.NONE:
            return True
    return False


def _relative_slash_redirects(router: Router) -> None:
    """Starlette's trailing-slash redirect, with a relative ``Location``.

    Starlette builds an absolute URL from the ``Host`` header, so a forged Host sent the
    browser elsewhere; this one answers ``/prefix/tasks`` and refuses ``//host`` paths.
    """

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"])
        twin = path.rstrip("/") if path.endswith("/") else f"{path}/"
        if (
            scope["type"] == "http"
            and twin.startswith("/")
            and not twin.startswith("//")
            and _routable(router.routes, {**scope, "path": twin})
        ):
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            location = f"{twin}?{query}" if query else twin
            await RedirectResponse(location, 307)(scope, receive, send)
            return
        await router.not_found(scope, receive, send)

    router.redirect_slashes = False
    router.default = default


def _http_error(prefix: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's HTTP errors (404, 405): in the JSON envelope under ``/api``, else text.

    The API's base is computed from the app's own prefix, not the request's ``root_path``:
    a path the mount did not match (a newline in it, say) still gets the envelope.
    """

    async def handle(request: Request, exc: Exception) -> Response:
        return _http_answer(request, exc, prefix)

    return handle


def _http_answer(request: Request, exc: Exception, prefix: str) -> Response:
    assert isinstance(exc, HTTPException)
    scope = request.scope
    base = str(scope.get("app_root_path", scope.get("root_path", ""))).rstrip("/") + prefix
    path = str(scope["path"])
    headers = dict(exc.headers or {})
    if path.startswith(f"{base}/api/") or path == f"{base}/api":
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        message = "no such endpoint" if exc.status_code == 404 else "method not allowed"
        return fail(exc.status_code, code, message, headers)
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", exc.status_code, headers)


def create_app(
    pool_or_dsn: Pool | str,
    *,
    auth: BasicAuth | OAuth | None = None,
    prefix: str = "",
    read_only: bool = False,
    secret_key: str | bytes | None = None,
    payloads: PayloadMode = "show",
    max_payload_bytes: int = 1024 * 1024,
    secure_cookies: bool = False,
    session_max_age: float = 24 * 3600.0,
    refresh_seconds: float = 5.0,
    throughput_minutes: int = 15,
    title: str = "asynqpg",
) -> Starlette:
    """Build the dashboard: an ASGI application (Starlette) that runs on Trio.

    Args:
        pool_or_dsn: an `open_pool` pool (stays yours), or a DSN (the app keeps a small pool
            and closes it at lifespan shutdown).
        auth: None (anyone who reaches it may use it), `BasicAuth`, or `OAuth`.
        prefix: the URL path to serve under, like ``/asynqpg`` (default: the root).
        read_only: refuse every state-changing request (403 ``read_only``) and hide the
            action buttons.
        secret_key: signs the session cookies (16 bytes or more); default: a random key, so
            sessions end when the process does.  Give every process behind one address the
            same key.
        payloads: ``"show"`` payloads on the detail page and in the API; ``"hide"`` them
            behind a Reveal button (the detail and action responses carry ``null``; the
            ``/payload`` endpoint serves them); ``"deny"`` never serve them.
        max_payload_bytes: the longest payload the dashboard reads, shows or serves
            (default 1 MiB); a longer one is not read at all: the pages say how long it
            is, and the payload endpoint answers 403 ``payload_too_large``.
        secure_cookies: mark cookies Secure (serve over HTTPS).
        session_max_age: seconds a session (login and CSRF token) lasts.
        refresh_seconds: how often the pages refresh their live part.
        throughput_minutes: the throughput window on the overview (1 to 1440).
        title: the name shown in the pages' header.

    Raises:
        ConfigurationError: an option cannot be used (the message says which).
    """
    if payloads not in ("show", "hide", "deny"):
        raise ConfigurationError(f"payloads must be 'show', 'hide' or 'deny', got {payloads!r}")
    if auth is not None and not isinstance(auth, BasicAuth | OAuth):
        raise ConfigurationError("auth must be None, a BasicAuth or an OAuth")
    if not 60 <= session_max_age <= 365 * 86400:
        raise ConfigurationError("session_max_age must be between 60 s and a year")
    if not 0.2 <= refresh_seconds <= 3600:
        raise ConfigurationError("refresh_seconds must be between 0.2 and 3600")
    if not 1 <= throughput_minutes <= 1440:
        raise ConfigurationError("throughput_minutes must be between 1 and 1440")
    if (
        isinstance(max_payload_bytes, bool)
        or not isinstance(max_payload_bytes, int)
        or not 0 <= max_payload_bytes <= 1 << 30
    ):
        raise ConfigurationError("max_payload_bytes must be an int from 0 to 2**30 (1 GiB)")
    settings = Settings(
        prefix=_prefix(prefix),
        auth=auth,
        read_only=bool(read_only),
        payloads=payloads,
        max_payload_bytes=max_payload_bytes,
        secure_cookies=bool(secure_cookies),
        session_max_age=float(session_max_age),
        refresh_seconds=float(refresh_seconds),
        throughput_minutes=throughput_minutes,
        title=title,
    )
    # The pool must exist now, not at lifespan startup: an app driven without lifespan
    # events (an ASGI test transport) still serves.  So the client owns it (`PoolOwner`: a
    # DSN's pool is lazy and needs no task), and the lifespan's end closes it if it made it.
    client = Client(pool_or_dsn)
    codec = SessionCodec(
        _secret(secret_key), max_age=settings.session_max_age, secure=settings.secure_cookies
    )
    site = Site(settings, pool_of(client), client, codec, make_templates())
    inner: list[BaseRoute] = [*api_routes(site)]
    if isinstance(auth, OAuth):
        inner += oauth_routes(site, auth)
    inner += page_routes(site)
    inner.append(Mount("/static", StaticFiles(directory=_STATIC), name="static"))
    routes: list[BaseRoute] = inner
    if settings.prefix:

        async def to_root(request: Request) -> Response:
            return RedirectResponse(f"{settings.prefix}/", 307)

        mounted = Router(inner)
        _relative_slash_redirects(mounted)
        routes = [Route(settings.prefix, to_root), Mount(settings.prefix, app=mounted)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, prefix=settings.prefix)],
        exception_handlers={HTTPException: _http_error(settings.prefix)},
        lifespan=lifespan,
    )
    _relative_slash_redirects(app.router)
    return app


async def serve_dashboard(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a `create_app` application with Hypercorn's Trio worker until cancelled.

    Args:
        app: the dashboard (or any ASGI application).
        host: the address to listen on.
        port: the port; 0 picks a free one.
        task_status: receives the bound URL (``http://127.0.0.1:8080``) once listening.

    Cancellation: runs until cancelled; then stops listening and drops open connections.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.worker_class = "trio"
    config.accesslog = None
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
        task_status.started(binds[0])
