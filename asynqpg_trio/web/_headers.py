"""Security headers on every response, and the cross-site check for state-changing requests.

Theory of operation
-------------------
`SecurityHeaders` is ASGI middleware around the whole application: every response it sees
start gets a Content Security Policy that allows only the dashboard's own scripts, styles and
connections (no inline script, no inline event handlers: ``static/dashboard.js`` does
everything), refuses to be framed (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``, so
another site cannot overlay a framed "Retry all" with its own bait), turns off MIME sniffing
and sends the Referer only to the dashboard itself.  Every response but a static file also
gets ``Cache-Control: no-store`` (task data, payloads and CSRF tokens stay out of caches),
unless the handler set its own.

`cross_site` is the second CSRF defence, beside the token: a state-changing request that a
browser marks as coming from another site is refused.  ``Sec-Fetch-Site`` (sent by current
browsers, and not settable by scripts) decides when present: only ``same-origin`` and
``none`` (the user's own action) pass.  Otherwise ``Origin`` must name the dashboard: its
host (and port) equal to the ``Host`` header's, or to the OAuth ``public_url``'s.  A request
with neither header (curl, a script) is not a browser's cross-site request and passes to the
token check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "cross_site"]

#: The dashboard's Content Security Policy (login buttons may show a provider's https icon).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_ALWAYS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
_SAME_SITE: Final = frozenset({"same-origin", "none"})


class SecurityHeaders:
    """ASGI middleware: the security headers on every response (see the module docstring).

    Args:
        app: the application.
        prefix: the dashboard's prefix, to recognise its static files.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = str(scope.get("root_path", "")).rstrip("/")
        static = str(scope["path"]).startswith(f"{root}{self.prefix}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in _ALWAYS if name not in names]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host(origin: str) -> str | None:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def cross_site(request: Request, public_url: str | None) -> bool:
    """Whether a browser sent ``request`` from another site (see the module docstring)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in _SAME_SITE
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = _host(origin.strip())
    allowed = {request.headers.get("host", "").strip().lower()}
    if public_url is not None:
        allowed.add(_host(public_url) or "")
    return host is None or host not in allowed - {""}
