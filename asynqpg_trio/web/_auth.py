"""Who may use the dashboard: no auth, HTTP Basic, or OAuth providers.

Theory of operation
-------------------
The mode is the type of ``create_app(auth=...)``: None (open), `BasicAuth` or `OAuth`, so the
two ways to log in cannot be configured together.  Basic credentials are checked on every
request by `check_basic`, which compares SHA-256 digests of the given and the expected user
name and password with `hmac.compare_digest`, both of them every time: the time taken does
not depend on where, or whether, the inputs differ.

An OAuth login is two redirects.  The dashboard sends the browser to
``provider.authorization_url(callback_url=..., state=...)`` and later receives it back at the
callback, where ``await provider.complete(callback_url=..., params=...)`` turns the query
parameters into a `User` (or raises `AuthenticationFailed`).  The callback URL is built from
`OAuth.public_url`, never from request headers, so a forged ``Host`` cannot redirect a code
elsewhere.  `OAuth.allow` then decides whether that user may look at the queue at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from .._core._errors import ConfigurationError

__all__ = ["AuthProvider", "BasicAuth", "OAuth", "User", "check_basic"]

_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True, slots=True)
class User:
    """A person logged in through an OAuth provider.

    Attributes:
        id: the provider's stable id for the account.
        provider: the `AuthProvider.id` that vouched for it.
        login: the account's handle (``octocat``).
        name: a display name (the login when the account has none).
        avatar_url: a picture, if the provider has one.
        email: the account's e-mail address, if the provider shares it.
    """

    id: str
    provider: str
    login: str
    name: str
    avatar_url: str | None = None
    email: str | None = None


@runtime_checkable
class AuthProvider(Protocol):
    """An OAuth (or OpenID Connect) login provider; `GitHubProvider` is one.

    ``id`` names the provider in URLs (lower case letters, digits, ``-`` and ``_``); ``name``
    and ``icon_url`` are shown on the login page.
    """

    @property
    def id(self) -> str:
        """The provider's id, unique among the dashboard's providers."""
        ...

    @property
    def name(self) -> str:
        """The name shown on the login button."""
        ...

    @property
    def icon_url(self) -> str | None:
        """An icon for the login button, or None."""
        ...

    def authorization_url(self, *, callback_url: str, state: str) -> str:
        """Where to send the browser to log in; the provider must echo ``state`` back."""
        ...

    async def complete(self, *, callback_url: str, params: Mapping[str, str]) -> User:
        """Turn the callback's query parameters into the logged-in user.

        The dashboard has already checked ``state``.

        Raises:
            AuthenticationFailed: the user denied access, or the exchange failed.

        Cancellation: a checkpoint; nothing is stored until it returns.
        """
        ...


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic authentication with one user name and password.

    Raises:
        ConfigurationError: either is empty, or the user name contains a colon.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username:
            raise ConfigurationError("basic auth needs a user name")
        if ":" in self.username:
            raise ConfigurationError("a basic auth user name cannot contain ':'")
        if not self.password:
            raise ConfigurationError("basic auth needs a password")


@dataclass(frozen=True, slots=True)
class OAuth:
    """Log in through one or more OAuth providers.

    Args:
        providers: the providers offered on the login page; their ids must be unique.
        public_url: the dashboard's address as browsers see it, prefix included
            (``https://ops.example.com/asynqpg``).  Each provider's callback is
            ``<public_url>/api/auth/callback/<id>``; register that URL with the provider.
        allow: decides whether a logged-in user may use the dashboard (for example
            ``lambda user: user.login in {"alice", "bob"}``).  Pass ``lambda user: True``
            only if every account of every provider may see your queue.

    Raises:
        ConfigurationError: no providers, a duplicate or malformed id, or a public URL that
            is not an absolute http(s) URL without query or fragment.
    """

    providers: Sequence[AuthProvider]
    public_url: str
    allow: Callable[[User], bool]

    def __post_init__(self) -> None:
        if not self.providers:
            raise ConfigurationError("OAuth needs at least one provider")
        seen: set[str] = set()
        for provider in self.providers:
            if not _PROVIDER_ID.match(provider.id):
                raise ConfigurationError(
                    f"auth provider id {provider.id!r} must be lower-case letters, digits, "
                    "'-' or '_' (at most 40)"
                )
            if provider.id in seen:
                raise ConfigurationError(f"duplicate auth provider id: {provider.id}")
            seen.add(provider.id)
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"public_url must be an absolute http(s) URL, got {self.public_url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError("public_url cannot have a query or a fragment")
        if not callable(self.allow):
            raise ConfigurationError("allow must be a callable taking a User")

    def provider(self, provider_id: str) -> AuthProvider | None:
        """The provider with this id, or None."""
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        return None

    def callback_url(self, provider_id: str) -> str:
        """The provider's callback URL, from `public_url` alone."""
        return f"{self.public_url.rstrip('/')}/api/auth/callback/{provider_id}"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def check_basic(header: str | None, expected: BasicAuth) -> str | None:
    """Check an ``Authorization`` header against ``expected``.

    Returns:
        None when the credentials are right, else the reason to give in the 401 answer:
        ``"authentication required"`` (no Basic credentials) or ``"invalid credentials"``.
    """
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return "authentication required"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "invalid credentials"
    username, colon, password = decoded.partition(":")
    user_ok = hmac.compare_digest(_digest(username), _digest(expected.username))
    password_ok = hmac.compare_digest(_digest(password), _digest(expected.password))
    if user_ok & password_ok & bool(colon):
        return None
    return "invalid credentials"
