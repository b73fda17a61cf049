"""Sessions in signed cookies, and the CSRF token they carry.

Theory of operation
-------------------
A session is a small JSON object (the CSRF token, and under OAuth the logged-in user) that
travels in the ``asynqpg_session`` cookie, signed and timestamped with itsdangerous under the
dashboard's secret key.  Nothing is stored on the server, so there is no store to sweep or
close; the price is that logging out only clears the browser's cookie, and a copied cookie
stays valid until it expires (``session_max_age`` after it was issued; it is not renewed).
A cookie with a bad signature counts as no session ("invalid"), and an old one as "expired".

CSRF: every session holds a random token.  Pages put it in a ``<meta>`` tag, the JSON API
hands it out at ``GET /api/csrf``, and every state-changing request must send it back in the
``X-CSRF-Token`` header; `csrf_ok` compares in constant time.  A cross-site page can make the
browser send the cookie (or cached Basic credentials), but it cannot read the token.  The
token is replaced at login, so a token planted before login is worthless after it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from ._auth import User

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "STATE_COOKIE",
    "Session",
    "SessionCodec",
    "csrf_ok",
    "token",
]

SESSION_COOKIE: Final = "asynqpg_session"
STATE_COOKIE: Final = "asynqpg_oauth_state"
CSRF_HEADER: Final = "X-CSRF-Token"


def token() -> str:
    """A fresh random token: 32 bytes, URL-safe base64 without padding (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True)
class Session:
    """One request's session: what the cookie held, and whether to send a new cookie.

    Attributes:
        data: the session's contents (``csrf``; ``user`` once logged in through OAuth).
        problem: why the request's cookie did not count, if it had one: ``"invalid"``
            (bad signature or contents) or ``"expired"``; None otherwise.
        dirty: the cookie must be (re)written on the response.
        cleared: the cookie must be deleted on the response.
    """

    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    dirty: bool = False
    cleared: bool = False

    @property
    def csrf(self) -> str | None:
        """The session's CSRF token, if it has one."""
        value = self.data.get("csrf")
        return value if isinstance(value, str) else None

    def ensure_csrf(self) -> str:
        """The CSRF token, made (and the cookie scheduled) if the session had none."""
        current = self.csrf
        if current is None:
            current = self.data["csrf"] = token()
            self.dirty = True
        return current

    @property
    def user(self) -> User | None:
        """The OAuth user logged in with this session, if any."""
        raw = self.data.get("user")
        if not isinstance(raw, dict):
            return None
        try:
            return User(**raw)
        except TypeError:
            return None

    def log_in(self, user: User) -> None:
        """Start a fresh session for ``user`` with a new CSRF token."""
        self.data = {"csrf": token(), "user": _user_dict(user)}
        self.dirty, self.cleared = True, False

    def clear(self) -> None:
        """End the session: the response deletes the cookie."""
        self.data = {}
        self.dirty, self.cleared = False, True


def _user_dict(user: User) -> dict[str, str | None]:
    return {
        "id": user.id,
        "provider": user.provider,
        "login": user.login,
        "name": user.name,
        "avatar_url": user.avatar_url,
        "email": user.email,
    }


class SessionCodec:
    """Reads and writes the session cookie, signed with the dashboard's secret."""

    def __init__(self, secret: bytes, *, max_age: float, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="asynqpg-trio.web.session")
        self._max_age = max_age
        self._secure = secure

    def load(self, request: Request) -> Session:
        """The request's session; an empty one if the cookie is missing, bad or expired."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return Session()
        try:
            data = self._serializer.loads(raw, max_age=round(self._max_age))
        except SignatureExpired:
            return Session(problem="expired")
        except BadSignature:
            return Session(problem="invalid")
        if not isinstance(data, dict):
            return Session(problem="invalid")
        return Session(data=data)

    def save(self, session: Session, response: Response, path: str) -> None:
        """Write or delete the cookie on ``response`` as the session asks."""
        if session.cleared:
            response.delete_cookie(
                SESSION_COOKIE, path=path, secure=self._secure, httponly=True, samesite="lax"
            )
        elif session.dirty:
            response.set_cookie(
                SESSION_COOKIE,
                self._serializer.dumps(session.data),
                max_age=int(self._max_age),
                path=path,
                secure=self._secure,
                httponly=True,
                samesite="lax",
            )


def csrf_ok(session: Session, sent: str | None) -> bool:
    """Whether ``sent`` is the session's CSRF token (constant-time comparison)."""
    expected = session.csrf
    if expected is None or not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))
