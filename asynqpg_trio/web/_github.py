"""GitHub as an OAuth login provider for the dashboard (an example `AuthProvider`).

Register an OAuth app at GitHub with the callback ``<public_url>/api/auth/callback/github``.
`GitHubProvider.complete` exchanges the code for a token and reads ``/user`` with httpx; the
token is used once and not kept.  To restrict who may log in, pass ``allow=`` to `OAuth`
(for example by ``user.login``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from .._core._errors import AuthenticationFailed
from ._auth import User

__all__ = ["GitHubProvider"]


@dataclass(frozen=True, slots=True)
class GitHubProvider:
    """Log in with a GitHub account.

    Args:
        client_id: the OAuth app's client id.
        client_secret: the OAuth app's client secret.
        id: the id in the dashboard's URLs.
        name: the login button's text.
        icon_url: the login button's icon.
        scope: the scopes asked for (the default reads the profile and e-mail address).
        web_url: GitHub's web address (change it for GitHub Enterprise).
        api_url: GitHub's API address (change it for GitHub Enterprise).
        transport: an httpx transport to use instead of the network (for tests).
    """

    client_id: str
    client_secret: str = field(repr=False)
    id: str = "github"
    name: str = "GitHub"
    icon_url: str | None = None
    scope: str = "read:user user:email"
    web_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)

    def authorization_url(self, *, callback_url: str, state: str) -> str:
        """GitHub's authorize page for this app, with ``state`` to be echoed back."""
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": callback_url,
                "scope": self.scope,
                "state": state,
                "allow_signup": "false",
            }
        )
        return f"{self.web_url}/login/oauth/authorize?{query}"

    async def complete(self, *, callback_url: str, params: Mapping[str, str]) -> User:
        """Exchange the callback's ``code`` for a token and read the account.

        Raises:
            AuthenticationFailed: the user denied access, GitHub refused the code, or its
                answers could not be read.

        Cancellation: a checkpoint; nothing is kept if cancelled.
        """
        if "error" in params:
            raise AuthenticationFailed(f"GitHub answered {params['error']!r}")
        code = params.get("code")
        if not code:
            raise AuthenticationFailed("GitHub sent no code")
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=10.0) as http:
                answer = await http.post(
                    f"{self.web_url}/login/oauth/access_token",
                    data={
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                        "code": code,
                        "redirect_uri": callback_url,
                    },
                    headers={"Accept": "application/json"},
                )
                grant: Any = answer.json()
                access = grant.get("access_token") if isinstance(grant, dict) else None
                if answer.status_code != 200 or not isinstance(access, str):
                    raise AuthenticationFailed(f"GitHub refused the code: {grant!r:.200}")
                answer = await http.get(
                    f"{self.api_url}/user",
                    headers={
                        "Authorization": f"Bearer {access}",
                        "Accept": "application/vnd.github+json",
                    },
                )
                account: Any = answer.json()
        except (httpx.HTTPError, ValueError) as ex:
            raise AuthenticationFailed(f"GitHub could not be read: {ex}") from ex
        if answer.status_code != 200 or not isinstance(account, dict) or "id" not in account:
            raise AuthenticationFailed(f"GitHub did not return the account: {answer.status_code}")
        login = str(account.get("login") or account["id"])
        return User(
            id=str(account["id"]),
            provider=self.id,
            login=login,
            name=str(account.get("name") or login),
            avatar_url=account.get("avatar_url"),
            email=account.get("email"),
        )
