"""The ``dashboard`` command: serve the web dashboard with Hypercorn's Trio worker.

Theory of operation
-------------------
The options are checked first (usage errors exit with status 2 before any connection), then
one pool is opened, the schema checked, and `asynqpg_trio.web.create_app` served by
`serve_dashboard` until SIGINT or SIGTERM, which stops the server and closes the pool.  The
bound URL (prefix included) is printed on stderr, so ``--port 0`` can be used.  The web
extra is imported only when the command runs, so the rest of the command line works without
it.  Secrets can come from the environment instead of the command line, where other users of
the machine could read them.  ``python -m asynqpg_trio._cli._web`` runs the command alone.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from .._pg._server import DSN_ENV, resolve_dsn
from ._args import (
    CommandError,
    Parser,
    command,
    common_options,
    pool_options,
    positive_seconds,
    split,
)
from ._commands import one_line

if TYPE_CHECKING:
    import argparse

    from ..web import BasicAuth, OAuth

__all__ = ["add_web_commands"]

PASSWORD_ENV = "ASYNQPG_DASHBOARD_PASSWORD"
SECRET_ENV = "ASYNQPG_DASHBOARD_SECRET"
GITHUB_SECRET_ENV = "ASYNQPG_GITHUB_CLIENT_SECRET"
PROG = "asynqpg-trio"


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise CommandError(f"invalid port {text!r}: expected 0 to 65535", 2)
    return int(text)


def _size(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise CommandError(f"invalid --max-payload {text!r}: expected a number of bytes", 2)
    return int(text)


def _auth(args: argparse.Namespace) -> BasicAuth | OAuth | None:
    from ..web import BasicAuth, GitHubProvider, OAuth

    password = args.basic_password or os.environ.get(PASSWORD_ENV) or None
    basic = args.basic_user is not None or args.basic_password is not None
    github = args.github_client_id is not None
    if basic and github:
        raise CommandError("choose Basic auth or GitHub login, not both", 2)
    if basic:
        if not args.basic_user or not password:
            raise CommandError(
                f"Basic auth needs --basic-user and --basic-password (or ${PASSWORD_ENV})", 2
            )
        return BasicAuth(args.basic_user, password)
    if not github:
        return None
    secret = args.github_client_secret or os.environ.get(GITHUB_SECRET_ENV)
    if not secret or not args.public_url:
        raise CommandError(
            f"GitHub login needs --github-client-secret (or ${GITHUB_SECRET_ENV}) and --public-url",
            2,
        )
    allowed = {login.lower() for login in args.allow_user or ()}
    if not allowed:
        raise CommandError("GitHub login needs --allow-user LOGIN (one or more)", 2)
    return OAuth(
        providers=[GitHubProvider(args.github_client_id, secret)],
        public_url=args.public_url,
        allow=lambda user: user.login.lower() in allowed,
    )


async def _serve(
    dsn: str, options: dict[str, Any], host: str, port: int, pooler: dict[str, Any]
) -> int:
    import psycopg

    from .._pg._migrate import check_schema
    from .._pg._pool import open_pool
    from ..web import create_app, serve_dashboard

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_pool(dsn, min_size=0, max_size=8, reconnect_timeout=2.0, **pooler) as pool:
            try:
                async with pool.connection() as conn:
                    await check_schema(conn)
            except psycopg.OperationalError as ex:
                raise CommandError(f"cannot connect to the database: {one_line(ex)}") from None
            app = create_app(pool, **options)
            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(serve_dashboard, app, host=host, port=port))
                prefix = options.get("prefix", "").rstrip("/")
                print(f"dashboard listening on {url}{prefix}/ (Ctrl-C to stop)", file=sys.stderr)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    print("dashboard stopped", file=sys.stderr)
    return 0


def _run_dashboard(args: argparse.Namespace) -> int:
    try:
        from ..web import create_app  # noqa: F401 - is the web extra installed?
    except ImportError as ex:
        raise CommandError(
            f"the dashboard needs the web extra ({one_line(ex)}): "
            "pip install '.[web]' in a checkout of asynqpg-trio",
            2,
        ) from None
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise CommandError(f"no database given: pass --dsn or set {DSN_ENV}", 2)
    port = _port(args.port)
    options: dict[str, Any] = {
        "auth": _auth(args),
        "prefix": args.prefix,
        "read_only": args.read_only,
        "payloads": args.payloads,
        "max_payload_bytes": _size(args.max_payload),
        "secure_cookies": args.secure_cookies,
        "secret_key": args.secret_key or os.environ.get(SECRET_ENV) or None,
        "refresh_seconds": args.refresh,
    }
    from .._core._errors import ConfigurationError

    try:
        from ..web import create_app as check

        check(dsn, **options)  # validates every option; the lazy pool opens nothing
    except ConfigurationError as ex:
        raise CommandError(str(ex), 2) from None
    return trio.run(_serve, dsn, options, args.host, port, pool_options(args))


def add_web_commands(sub: Any, common: Parser) -> None:
    """Register ``dashboard``."""
    p = command(sub, "dashboard", common, "serve the web dashboard")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", default="8080", help="port to listen on; 0 picks one (default 8080)")
    p.add_argument("--prefix", default="", help="URL path to serve under, like /asynqpg")
    p.add_argument("--read-only", action="store_true", help="refuse changes; hide the buttons")
    p.add_argument(
        "--payloads",
        choices=("show", "hide", "deny"),
        default="show",
        help="show payloads, hide them behind a Reveal button, or never serve them",
    )
    p.add_argument(
        "--max-payload",
        default=str(1024 * 1024),
        metavar="BYTES",
        help="the longest payload shown or served; longer ones are never read (default 1 MiB)",
    )
    p.add_argument("--basic-user", default=None, help="HTTP Basic auth user name")
    p.add_argument(
        "--basic-password", default=None, help=f"HTTP Basic auth password (or ${PASSWORD_ENV})"
    )
    p.add_argument("--github-client-id", default=None, help="log in with GitHub (OAuth app id)")
    p.add_argument(
        "--github-client-secret",
        default=None,
        help=f"the OAuth app's secret (or ${GITHUB_SECRET_ENV})",
    )
    p.add_argument(
        "--public-url", default=None, help="the dashboard's external URL, prefix included"
    )
    p.add_argument(
        "--allow-user",
        type=split,
        action="extend",
        metavar="LOGIN",
        help="GitHub logins allowed in (comma-separated; repeatable)",
    )
    p.add_argument(
        "--secret-key", default=None, help=f"signs session cookies (or ${SECRET_ENV}; random)"
    )
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (HTTPS)")
    p.add_argument(
        "--refresh",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often pages refresh their live part (default 5)",
    )
    p.set_defaults(func=_run_dashboard)


def _standalone(argv: list[str]) -> int:
    parser = Parser(prog=PROG, parents=[common_options(top=True)])
    sub = parser.add_subparsers(dest="command", required=True)
    add_web_commands(sub, common_options(top=False))
    args = parser.parse_args(["dashboard", *argv])
    try:
        return int(args.func(args))
    except CommandError as ex:
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        return ex.code


if __name__ == "__main__":
    sys.exit(_standalone(sys.argv[1:]))
