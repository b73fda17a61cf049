"""The OAuth login flow: provider list, login redirect, callback, current user, logout.

Theory of operation
-------------------
``GET <prefix>/api/auth/login/<id>`` makes a random state, keeps it (with the page to return
to) in the short-lived ``asynqpg_oauth_state`` cookie scoped to ``<prefix>/api/auth/``, and
redirects to the provider.  The provider sends the browser back to
``<public_url>/api/auth/callback/<id>``; there the state cookie must equal the ``state``
parameter (constant-time), the cookie is expired, the provider completes the login, and
`OAuth.allow` must accept the user.  Then the session is started afresh (new CSRF token) and
the browser goes to the page it came from, which must still lie under the prefix once
resolved as a browser resolves it (`safe_next`).  Every failure goes to
``<prefix>/login?error=<code>``; the provider's own error text is logged, never put in the
URL.

Logout needs no valid session (a stale cookie is still cleared), but when there is one it
needs the CSRF token, so another site cannot log the user out.
"""

from __future__ import annotations

import hmac
import logging
import posixpath
import re
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._core._errors import AuthenticationFailed
from ._auth import OAuth
from ._session import CSRF_HEADER, STATE_COOKIE, csrf_ok, token
from ._site import Access, Site, fail, ok

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["oauth_routes", "safe_next"]

logger = logging.getLogger("asynqpg_trio.web")

_DOT: Final = re.compile("%2e", re.IGNORECASE)


def safe_next(base: str, target: str | None) -> str:
    """Where to send the browser after login: ``target`` resolved, if under the dashboard.

    The path is resolved as a browser resolves it (backslashes are slashes, ``.``, ``..``
    and their percent-encoded forms such as ``%2e%2E`` are dot segments, repeated slashes
    collapse) and the *resolved* path is returned, so what was checked is what the browser
    loads.  Anything else (another origin, ``//host``, a scheme, control characters, a
    path that resolves outside ``base``) gives the overview's path.
    """
    home = f"{base}/"
    if not target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return home
    parts = urlsplit(target)
    path = parts.path.replace("\\", "/")
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return home
    resolved = re.sub(r"/{2,}", "/", posixpath.normpath(_DOT.sub(".", path)))
    if path.endswith("/") and resolved != "/":
        resolved += "/"
    if resolved == base:
        resolved = home
    if not resolved.startswith(home):
        return home
    return urlunsplit(("", "", resolved, parts.query, parts.fragment))


class _Flow:
    def __init__(self, site: Site, oauth: OAuth) -> None:
        self.site = site
        self.oauth = oauth

    def _login_page(self, request: Request, error: str) -> Response:
        return RedirectResponse(f"{self.site.base(request)}/login?error={error}", 302)

    async def providers(self, request: Request) -> Response:
        base = self.site.base(request)
        return ok(
            [
                {
                    "id": p.id,
                    "name": p.name,
                    "icon_url": p.icon_url,
                    "login_url": f"{base}/api/auth/login/{p.id}",
                }
                for p in self.oauth.providers
            ]
        )

    async def login(self, request: Request) -> Response:
        provider_id = request.path_params["provider"]
        provider = self.oauth.provider(provider_id)
        if provider is None:
            return fail(404, "not_found", f"unknown auth provider: {provider_id}")
        base = self.site.base(request)
        state = token()
        target = safe_next(base, request.query_params.get("next"))
        url = provider.authorization_url(
            callback_url=self.oauth.callback_url(provider.id), state=state
        )
        response = RedirectResponse(url, 302)
        response.set_cookie(
            STATE_COOKIE,
            f"{state}:{quote(target, safe='')}",
            max_age=600,
            path=f"{base}/api/auth/",
            secure=self.site.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        provider_id = request.path_params["provider"]
        provider = self.oauth.provider(provider_id)
        if provider is None:
            return fail(404, "not_found", f"unknown auth provider: {provider_id}")
        base = self.site.base(request)
        kept, _, quoted_target = request.cookies.get(STATE_COOKIE, "").partition(":")
        sent = request.query_params.get("state", "")
        if not kept or not hmac.compare_digest(kept.encode(), sent.encode()):
            response = self._login_page(request, "invalid_state")
        else:
            response = await self._complete(request, provider_id, unquote(quoted_target))
        response.delete_cookie(
            STATE_COOKIE,
            path=f"{base}/api/auth/",
            secure=self.site.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def _complete(self, request: Request, provider_id: str, target: str) -> Response:
        provider = self.oauth.provider(provider_id)
        assert provider is not None
        try:
            user = await provider.complete(
                callback_url=self.oauth.callback_url(provider_id),
                params=dict(request.query_params),
            )
        except AuthenticationFailed as ex:
            logger.warning("dashboard: %s login failed: %s", provider_id, ex)
            return self._login_page(request, "provider_error")
        if not self.oauth.allow(user):
            logger.warning("dashboard: %s user %r is not allowed", provider_id, user.login)
            return self._login_page(request, "forbidden")
        self.site.session(request).log_in(user)
        return RedirectResponse(safe_next(self.site.base(request), target), 302)

    async def me(self, request: Request) -> Response:
        user = self.site.session(request).user
        if user is None:  # pragma: no cover - the READ gate answers first
            return fail(401, "unauthorized", "not authenticated")
        return ok(
            {
                "id": user.id,
                "provider": user.provider,
                "login": user.login,
                "name": user.name,
                "avatar_url": user.avatar_url,
                "email": user.email,
            }
        )

    async def logout(self, request: Request) -> Response:
        session = self.site.session(request)
        if refusal := self.site.cross_site_refusal(request):
            return refusal
        if session.user is not None and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return fail(403, "csrf_failed", f"missing or invalid {CSRF_HEADER} header")
        session.clear()
        return ok({"status": "logged_out"})


def oauth_routes(site: Site, oauth: OAuth) -> list[Route]:
    """The ``/api/auth/...`` routes (OAuth mode only)."""
    flow = _Flow(site, oauth)
    public, read = Access.PUBLIC, Access.READ
    return [
        Route("/api/auth/providers", site.endpoint(flow.providers, public)),
        Route("/api/auth/login/{provider}", site.endpoint(flow.login, public)),
        Route("/api/auth/callback/{provider}", site.endpoint(flow.callback, public)),
        Route("/api/auth/me", site.endpoint(flow.me, read)),
        Route("/api/auth/logout", site.endpoint(flow.logout, public), methods=["POST"]),
    ]
