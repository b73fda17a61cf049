"""The dashboard's shared state and the gate every request passes: auth, read-only, CSRF.

Theory of operation
-------------------
`Site` holds what every handler needs: the settings, the `Client`, the session codec and
the templates.  `Site.endpoint` wraps each handler with its `Access` level and decides before
the handler runs, in this order:

1. PUBLIC routes (health, config, static files, the OAuth login routes) pass.
2. Otherwise the caller must be authenticated: Basic credentials on every request, or an
   OAuth session.  An API call without them gets 401 in the JSON envelope; a page gets a
   Basic challenge, or under OAuth a redirect to the login page.
3. WRITE routes then answer 403 ``read_only`` in read-only mode, 403 ``cross_site`` when a
   browser says the request comes from another site (`_headers.cross_site`: the
   ``Sec-Fetch-Site`` or ``Origin`` header), and 403 ``csrf_failed`` unless the
   ``X-CSRF-Token`` header carries the session's token.

After the handler (or the refusal), the session cookie is written or deleted if it changed.
URLs and cookie paths come from the ASGI ``root_path``, which Starlette sets to the prefix
(plus any mount point above it), so the dashboard works under any prefix.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from starlette.responses import PlainTextResponse, RedirectResponse, Response

from ._auth import BasicAuth, OAuth, check_basic
from ._headers import cross_site
from ._session import CSRF_HEADER, Session, SessionCodec, csrf_ok

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.templating import Jinja2Templates

    from .._api._client import Client
    from .._pg._pool import Pool

__all__ = ["Access", "Handler", "Settings", "Site", "fail", "ok"]

Handler = Callable[["Request"], Awaitable[Response]]
PayloadMode = Literal["show", "hide", "deny"]


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"  #: anyone
    READ = "read"  #: an authenticated user
    WRITE = "write"  #: an authenticated user, not read-only, sending the CSRF token


@dataclass(frozen=True, slots=True)
class Settings:
    """`create_app`'s options, checked."""

    prefix: str
    auth: BasicAuth | OAuth | None
    read_only: bool
    payloads: PayloadMode
    max_payload_bytes: int
    secure_cookies: bool
    session_max_age: float
    refresh_seconds: float
    throughput_minutes: int
    title: str

    def payload_fits(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes is small enough to read and serve."""
        return size <= self.max_payload_bytes

    @property
    def auth_mode(self) -> str:
        """``"none"``, ``"basic"`` or ``"oauth"``."""
        if isinstance(self.auth, OAuth):
            return "oauth"
        return "basic" if isinstance(self.auth, BasicAuth) else "none"


def ok(data: Any, status: int = 200) -> Response:
    """A JSON success: ``{"data": ...}`` and a newline."""
    return Response(json.dumps({"data": data}) + "\n", status, media_type="application/json")


def fail(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON failure: ``{"data": null, "error": {"code", "message"}}`` and a newline."""
    body = {"data": None, "error": {"code": code, "message": message}}
    return Response(json.dumps(body) + "\n", status, headers=headers, media_type="application/json")


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="asynqpg", charset="UTF-8"'}
_SESSION_PROBLEMS = {"expired": "session expired", "invalid": "invalid or expired session"}


class Site:
    """Everything the dashboard's handlers share.  Made by `create_app`."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        client: Client,
        codec: SessionCodec,
        templates: Jinja2Templates,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.codec = codec
        self.templates = templates

    @staticmethod
    def base(request: Request) -> str:
        """The dashboard's URL path prefix for this request (``""`` at the root)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def cookie_path(self, request: Request) -> str:
        """The path the dashboard's cookies are scoped to."""
        return self.base(request) or "/"

    def session(self, request: Request) -> Session:
        """The session `endpoint` loaded for this request."""
        session: Session = request.state.session
        return session

    def _refuse(
        self, request: Request, session: Session, access: Access, page: bool
    ) -> Response | None:
        if access is Access.PUBLIC:
            return None
        auth = self.settings.auth
        if isinstance(auth, BasicAuth):
            reason = check_basic(request.headers.get("authorization"), auth)
            if reason is not None:
                if page:
                    return PlainTextResponse(f"401: {reason}\n", 401, headers=_CHALLENGE)
                return fail(401, "unauthorized", reason, _CHALLENGE)
        elif isinstance(auth, OAuth) and session.user is None:
            if page:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                login = f"{self.base(request)}/login?next={quote(target, safe='')}"
                return RedirectResponse(login, 302)
            reason = _SESSION_PROBLEMS.get(session.problem or "", "authentication required")
            return fail(401, "unauthorized", reason)
        if access is Access.WRITE:
            if self.settings.read_only:
                return fail(403, "read_only", "the dashboard is read-only")
            if refusal := self.cross_site_refusal(request):
                return refusal
            if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                return fail(403, "csrf_failed", f"missing or invalid {CSRF_HEADER} header")
        return None

    def cross_site_refusal(self, request: Request) -> Response | None:
        """403 ``cross_site`` if a browser sent this state-changing request from another
        site, else None."""
        auth = self.settings.auth
        if cross_site(request, auth.public_url if isinstance(auth, OAuth) else None):
            message = "cross-site request refused: Origin or Sec-Fetch-Site names another site"
            return fail(403, "cross_site", message)
        return None

    def endpoint(self, handler: Handler, access: Access, *, page: bool = False) -> Handler:
        """Wrap ``handler`` with the access check and the session cookie bookkeeping."""

        async def run(request: Request) -> Response:
            session = self.codec.load(request)
            request.state.session = session
            refusal = self._refuse(request, session, access, page)
            response = refusal if refusal is not None else await handler(request)
            self.codec.save(session, response, self.cookie_path(request))
            return response

        run.__name__ = getattr(handler, "__name__", "endpoint")
        return run
