"""asynqpg-trio's web dashboard: an ASGI application (Starlette) that runs on Trio.

Install it with the ``web`` extra (``pip install '.[web]'`` in a checkout; see the README)
and run ``asynqpg-trio dashboard``, or build it in your own code::

    from asynqpg_trio.web import BasicAuth, create_app, serve_dashboard

    app = create_app(pool, auth=BasicAuth("admin", password), prefix="/asynqpg")
    await serve_dashboard(app, port=8080)  # or mount `app` in any ASGI server on Trio

The JSON API follows the Go asynqpg dashboard's (``<prefix>/api/...``, envelope
``{"data": ...}`` / ``{"data": null, "error": {"code", "message"}}``); state-changing calls
need the session's CSRF token in ``X-CSRF-Token`` (``GET <prefix>/api/csrf`` hands it out).
"""

from __future__ import annotations

from .._core._errors import AuthenticationFailed as AuthenticationFailed
from ._app import create_app as create_app
from ._app import serve_dashboard as serve_dashboard
from ._auth import AuthProvider as AuthProvider
from ._auth import BasicAuth as BasicAuth
from ._auth import OAuth as OAuth
from ._auth import User as User
from ._github import GitHubProvider as GitHubProvider

__all__ = (
    "AuthProvider",
    "AuthenticationFailed",
    "BasicAuth",
    "GitHubProvider",
    "OAuth",
    "User",
    "create_app",
    "serve_dashboard",
)
