"""The dashboard's auth: Basic, OAuth with a fake provider (no network), signed-cookie sessions,
GitHub against a fake transport, configuration checks, and the dashboard command."""

from __future__ import annotations

import base64
import time
import types
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import httpx
import hypothesis
import itsdangerous.timed
import pytest
from hypothesis import strategies as st

from asynqpg_trio import ConfigurationError, Pool
from asynqpg_trio._cli._web import _standalone
from asynqpg_trio.web import (
    AuthenticationFailed,
    AuthProvider,
    BasicAuth,
    GitHubProvider,
    OAuth,
    User,
    create_app,
)
from asynqpg_trio.web._oauth import safe_next

from .helpers.web import FakeProvider, SyncConn, csrf_token, dashboard_client, error_of, make

ALICE = User(id="1", provider="fake", login="alice", name="Alice A.")
MALLORY = User(id="2", provider="fake", login="mallory", name="Mallory")
PUBLIC_URL = "https://ops.example.com/ops/queue"


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_basic_auth_guards_pages_and_api(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn, "failed")
    auth = BasicAuth("admin", "s3cret:with colon")
    async with dashboard_client(pool, auth=auth, prefix="/q") as http:
        anonymous = await http.get("/q/api/stats")
        wrong = await http.get("/q/api/stats", headers=basic("admin", "nope"))
        wrong_user = await http.get("/q/api/stats", headers=basic("root", "s3cret:with colon"))
        garbage = await http.get("/q/api/stats", headers={"Authorization": "Basic %%%"})
        bearer = await http.get("/q/api/stats", headers={"Authorization": "Bearer x"})
        page = await http.get("/q/tasks")
        csrf_anonymous = await http.post("/q/api/tasks/bulk/retry")
        health = await http.get("/q/api/health")
        config = await http.get("/q/api/config")
        good = basic("admin", "s3cret:with colon")
        ok = await http.get("/q/api/stats", headers=good)
        page_ok = await http.get("/q/tasks", headers=good)
        token = (await http.get("/q/api/csrf", headers=good)).json()["data"]["token"]
        no_csrf = await http.post(f"/q/api/tasks/{task_id}/retry", headers=good)
        retried = await http.post(
            f"/q/api/tasks/{task_id}/retry", headers={**good, "X-CSRF-Token": token}
        )
    challenge = 'Basic realm="asynqpg", charset="UTF-8"'
    assert error_of(anonymous) == (401, "unauthorized", "authentication required")
    assert anonymous.headers["www-authenticate"] == challenge
    for answer in (wrong, wrong_user, garbage):
        assert error_of(answer) == (401, "unauthorized", "invalid credentials")
        assert answer.headers["www-authenticate"] == challenge
    assert error_of(bearer)[2] == "authentication required"
    assert (page.status_code, page.headers["www-authenticate"]) == (401, challenge)
    assert error_of(csrf_anonymous)[:2] == (401, "unauthorized")  # auth is checked first
    assert (health.status_code, config.json()["data"]["auth_mode"]) == (200, "basic")
    assert (ok.status_code, page_ok.status_code) == (200, 200)
    assert error_of(no_csrf)[:2] == (403, "csrf_failed")
    assert retried.json()["data"]["status"] == "pending"


def oauth(provider: AuthProvider, allow: Any = None) -> OAuth:
    return OAuth(
        providers=[provider],
        public_url=PUBLIC_URL,
        allow=allow or (lambda user: user.login == "alice"),
    )


async def login(http: httpx.AsyncClient, code: str, *, next_page: str = "") -> httpx.Response:
    """Run the login redirect and the callback with ``code``; return the callback answer."""
    query = f"?next={next_page}" if next_page else ""
    start = await http.get(f"/ops/queue/api/auth/login/fake{query}")
    assert start.status_code == 302
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    return await http.get(f"/ops/queue/api/auth/callback/fake?code={code}&state={state}")


async def test_oauth_login_flow_under_a_prefix(pool: Pool) -> None:
    provider = FakeProvider(users={"good": ALICE})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        providers = (await http.get("/ops/queue/api/auth/providers")).json()["data"]
        anonymous_api = await http.get("/ops/queue/api/stats")
        anonymous_page = await http.get("/ops/queue/tasks?status=failed")
        login_page = await http.get("/ops/queue/login?next=/ops/queue/tasks")
        start = await http.get(
            "/ops/queue/api/auth/login/fake?next=/ops/queue/tasks%3Fstatus%3Dfailed",
            headers={"Host": "evil.example", "X-Forwarded-Proto": "http"},
        )
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        done = await http.get(f"/ops/queue/api/auth/callback/fake?code=good&state={state}")
        me = await http.get("/ops/queue/api/auth/me")
        stats = await http.get("/ops/queue/api/stats")
        overview = await http.get("/ops/queue/")
    assert providers == [
        {
            "id": "fake",
            "name": "Fake",
            "icon_url": None,
            "login_url": "/ops/queue/api/auth/login/fake",
        }
    ]
    assert error_of(anonymous_api) == (401, "unauthorized", "authentication required")
    assert anonymous_page.status_code == 302
    assert anonymous_page.headers["location"] == (
        "/ops/queue/login?next=%2Fops%2Fqueue%2Ftasks%3Fstatus%3Dfailed"
    )
    assert 'href="/ops/queue/api/auth/login/fake?next=%2Fops%2Fqueue%2Ftasks"' in login_page.text
    # The callback URL comes from public_url, whatever the Host header says.
    callback = f"{PUBLIC_URL}/api/auth/callback/fake"
    assert parse_qs(urlsplit(start.headers["location"]).query)["redirect_uri"] == [callback]
    assert provider.callbacks == [callback]
    state_cookie = start.headers["set-cookie"]
    assert "asynqpg_oauth_state=" in state_cookie
    assert "Path=/ops/queue/api/auth/" in state_cookie and "HttpOnly" in state_cookie
    assert "Max-Age=600" in state_cookie and "SameSite=lax" in state_cookie
    assert (done.status_code, done.headers["location"]) == (302, "/ops/queue/tasks?status=failed")
    cookies = done.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("asynqpg_session="))
    assert "Path=/ops/queue" in session_cookie and "HttpOnly" in session_cookie
    assert "Max-Age=86400" in session_cookie and "Secure" not in session_cookie
    assert any(c.startswith("asynqpg_oauth_state=") and "Max-Age=0" in c for c in cookies)
    assert me.json()["data"]["login"] == "alice"
    assert stats.status_code == 200
    assert "Alice A." in overview.text and "Log out" in overview.text


async def test_oauth_refusals(pool: Pool) -> None:
    provider = FakeProvider(users={"good": ALICE, "mallory": MALLORY})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        unknown_login = await http.get("/ops/queue/api/auth/login/nope")
        unknown_callback = await http.get("/ops/queue/api/auth/callback/nope?state=x")
        no_cookie = await http.get("/ops/queue/api/auth/callback/fake?code=good&state=x")
        await http.get("/ops/queue/api/auth/login/fake")
        wrong_state = await http.get("/ops/queue/api/auth/callback/fake?code=good&state=x")
        refused = await login(http, "bad")
        not_allowed = await login(http, "mallory")
        open_redirect = await login(http, "good", next_page="https://evil.example/")
        me = await http.get("/ops/queue/api/auth/me")
        error_page = await http.get("/ops/queue/login?error=provider_error")
    assert error_of(unknown_login) == (404, "not_found", "unknown auth provider: nope")
    assert error_of(unknown_callback) == (404, "not_found", "unknown auth provider: nope")
    for answer in (no_cookie, wrong_state):
        assert answer.headers["location"] == "/ops/queue/login?error=invalid_state"
    # The provider's own error text is never put in the URL.
    assert refused.headers["location"] == "/ops/queue/login?error=provider_error"
    assert not_allowed.headers["location"] == "/ops/queue/login?error=forbidden"
    assert open_redirect.headers["location"] == "/ops/queue/"
    assert me.json()["data"]["login"] == "alice"
    assert "did not complete the login" in error_page.text and "<script>x" not in error_page.text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ops/queue/tasks?status=failed", "/ops/queue/tasks?status=failed"),
        ("/ops/queue/tasks/../tasks/./7", "/ops/queue/tasks/7"),
        ("/ops/queue/tasks#top", "/ops/queue/tasks#top"),
        ("/ops/queue//tasks", "/ops/queue/tasks"),
        ("/ops/queue\\tasks", "/ops/queue/tasks"),
        ("/ops/queue", "/ops/queue/"),
        ("/ops/queue/../../evil", "/ops/queue/"),
        ("/ops/queue/..", "/ops/queue/"),
        ("/ops/queue/%2e%2e/%2E%2e/evil", "/ops/queue/"),
        ("/ops/queue/.%2E/evil", "/ops/queue/"),
        ("/ops/queue/..\\..\\evil", "/ops/queue/"),
        ("/ops/queue\\..\\evil", "/ops/queue/"),
        ("/ops/queueevil", "/ops/queue/"),
        ("//evil.example/ops/queue/", "/ops/queue/"),
        ("/\\evil.example/ops/queue/", "/ops/queue/"),
        ("\\\\evil.example/ops/queue/", "/ops/queue/"),
        ("https://evil.example/ops/queue/", "/ops/queue/"),
        ("javascript:alert(1)//ops/queue/", "/ops/queue/"),
        ("/ops/queue/\t/evil", "/ops/queue/"),
        (" /ops/queue/tasks", "/ops/queue/tasks"),  # browsers strip leading spaces too
        (" //evil.example/ops/queue/", "/ops/queue/"),
        ("ops/queue/tasks", "/ops/queue/"),
        ("", "/ops/queue/"),
        (None, "/ops/queue/"),
    ],
)
def test_next_stays_under_the_prefix(target: str | None, expected: str) -> None:
    """``next=`` is resolved as a browser would (dot segments, %2e, backslashes) and must
    stay under the prefix (issue 16, item 9)."""
    assert safe_next("/ops/queue", target) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/tasks", "/tasks"), ("/../x", "/x"), ("/\\evil.example", "/"), ("//evil.example", "/")],
)
def test_next_at_the_root(target: str, expected: str) -> None:
    assert safe_next("", target) == expected


NEXT_TEXT = st.lists(
    st.sampled_from(["/", "\\", ".", "..", "%2e", "%2E", "ops", "queue", "?", "#", ":", "x", "//"])
).map("".join)


@hypothesis.given(NEXT_TEXT.map(lambda tail: "/ops/queue" + tail) | NEXT_TEXT)
@hypothesis.example("/ops/queue/%2e%2e/evil")
def test_next_never_leaves_the_prefix(target: str) -> None:
    result = safe_next("/ops/queue", target)
    path = urlsplit(result).path
    assert path.startswith("/ops/queue/") and "\\" not in path
    assert not {".", ".."} & {seg.lower().replace("%2e", ".") for seg in path.split("/")}
    resolved = urlsplit(urljoin("https://d.example/ops/queue/tasks/1", result))
    assert (resolved.netloc, resolved.path) == ("d.example", path)


async def test_login_next_is_normalised(pool: Pool) -> None:
    provider = FakeProvider(users={"good": ALICE})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        escape = quote("/ops/queue/../../evil", safe="")
        page = await http.get(f"/ops/queue/login?next={escape}")
        done = await login(http, "good", next_page=quote("/ops/queue/%2e%2e/evil", safe=""))
    assert 'href="/ops/queue/api/auth/login/fake?next=%2Fops%2Fqueue%2F"' in page.text
    assert done.headers["location"] == "/ops/queue/"


async def test_oauth_sessions_expire_and_reject_tampering(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeProvider(users={"good": ALICE})
    app_options: dict[str, Any] = {"auth": oauth(provider), "prefix": "/ops/queue"}
    async with dashboard_client(pool, **app_options, secret_key="k" * 32) as http:
        await login(http, "good")
        cookie = http.cookies["asynqpg_session"]
        http.cookies.clear()
        tampered = await http.get(
            "/ops/queue/api/stats", headers={"Cookie": f"asynqpg_session={cookie[:-2]}xx"}
        )
        await login(http, "good")
        later = types.SimpleNamespace(time=lambda: time.time() + 2 * 86400)
        monkeypatch.setattr(itsdangerous.timed, "time", later)
        expired = await http.get("/ops/queue/api/stats")
        expired_logout = await http.post("/ops/queue/api/auth/logout")
    assert error_of(tampered) == (401, "unauthorized", "invalid or expired session")
    assert error_of(expired) == (401, "unauthorized", "session expired")
    # Logging out needs no valid session, and always clears the cookie.
    assert expired_logout.json() == {"data": {"status": "logged_out"}}
    assert "Max-Age=0" in expired_logout.headers["set-cookie"]
    # A key from another deployment cannot sign in.
    async with dashboard_client(pool, **app_options, secret_key="k" * 32) as http:
        await login(http, "good")
        stolen = http.cookies["asynqpg_session"]
    async with dashboard_client(pool, **app_options, secret_key="z" * 32) as http:
        answer = await http.get(
            "/ops/queue/api/stats", headers={"Cookie": f"asynqpg_session={stolen}"}
        )
        assert error_of(answer)[2] == "invalid or expired session"


async def test_oauth_logout_needs_csrf_when_logged_in(pool: Pool) -> None:
    provider = FakeProvider(users={"good": ALICE})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        await login(http, "good")
        forged = await http.post("/ops/queue/api/auth/logout")
        still_in = await http.get("/ops/queue/api/auth/me")
        token = await csrf_token(http, "/ops/queue")
        out = await http.post("/ops/queue/api/auth/logout", headers={"X-CSRF-Token": token})
        after = await http.get("/ops/queue/api/auth/me")
    assert error_of(forged)[:2] == (403, "csrf_failed")
    assert still_in.status_code == 200
    assert out.json() == {"data": {"status": "logged_out"}}
    assert "Path=/ops/queue" in out.headers["set-cookie"]
    assert error_of(after) == (401, "unauthorized", "authentication required")


async def test_oauth_logout_refuses_cross_site_requests(pool: Pool) -> None:
    provider = FakeProvider(users={"good": ALICE})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        await login(http, "good")
        token = await csrf_token(http, "/ops/queue")
        forged = await http.post(
            "/ops/queue/api/auth/logout",
            headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
        )
        still_in = await http.get("/ops/queue/api/auth/me")
        # Behind a proxy the Host header may differ: the public URL's origin counts too.
        out = await http.post(
            "/ops/queue/api/auth/logout",
            headers={"X-CSRF-Token": token, "Origin": "https://ops.example.com"},
        )
    assert error_of(forged)[:2] == (403, "cross_site")
    assert still_in.status_code == 200
    assert out.json() == {"data": {"status": "logged_out"}}


async def test_login_rotates_the_csrf_token(pool: Pool, sync_conn: SyncConn) -> None:
    task_id = make(sync_conn, "failed")
    provider = FakeProvider(users={"good": ALICE})
    async with dashboard_client(pool, auth=oauth(provider), prefix="/ops/queue") as http:
        planted = (await http.get("/ops/queue/login")).text.split('name="csrf-token" content="')[1]
        planted = planted.split('"')[0]
        await login(http, "good")
        token = await csrf_token(http, "/ops/queue")
        stale = await http.post(
            f"/ops/queue/api/tasks/{task_id}/retry", headers={"X-CSRF-Token": planted}
        )
    assert token != planted
    assert error_of(stale)[:2] == (403, "csrf_failed")


def github_api(request: httpx.Request) -> httpx.Response:
    """GitHub's token and user endpoints, as far as the provider uses them."""
    if request.url.path == "/login/oauth/access_token":
        form = parse_qs(request.content.decode())
        assert form["client_secret"] == ["shh"]
        if form["code"] == ["good"]:
            return httpx.Response(200, json={"access_token": "tok", "token_type": "bearer"})
        return httpx.Response(200, json={"error": "bad_verification_code"})
    if request.url.path == "/user" and request.headers["authorization"] == "Bearer tok":
        return httpx.Response(200, json={"id": 1, "login": "alice", "name": None, "email": None})
    return httpx.Response(401, json={"message": "Bad credentials"})


def providers() -> list[AuthProvider]:
    github = GitHubProvider("app-id", "shh", id="fake", transport=httpx.MockTransport(github_api))
    return [FakeProvider(users={"good": User("1", "fake", "alice", "alice")}), github]


@pytest.mark.parametrize("provider", providers(), ids=["fake", "github"])
async def test_provider_contract(provider: AuthProvider) -> None:
    """The fake and the GitHub provider behave alike, so tests with the fake mean something."""
    assert isinstance(provider, AuthProvider)
    url = provider.authorization_url(callback_url="https://d.example/cb", state="s1")
    query = parse_qs(urlsplit(url).query)
    assert (query["state"], query["redirect_uri"]) == (["s1"], ["https://d.example/cb"])
    user = await provider.complete(callback_url="https://d.example/cb", params={"code": "good"})
    assert (user.provider, user.login, user.name) == ("fake", "alice", "alice")
    for params in ({"code": "bad"}, {}, {"error": "access_denied"}):
        with pytest.raises(AuthenticationFailed):
            await provider.complete(callback_url="https://d.example/cb", params=params)


def test_github_provider_defaults() -> None:
    github = GitHubProvider("app-id", "shh")
    assert "shh" not in repr(github)
    url = github.authorization_url(callback_url="https://d.example/cb", state="s")
    assert url.startswith("https://github.com/login/oauth/authorize?client_id=app-id&")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BasicAuth("", "p"), "needs a user name"),
        (lambda: BasicAuth("a:b", "p"), "cannot contain ':'"),
        (lambda: BasicAuth("a", ""), "needs a password"),
        (lambda: OAuth([], PUBLIC_URL, bool), "at least one provider"),
        (lambda: OAuth([FakeProvider(), FakeProvider()], PUBLIC_URL, bool), "duplicate"),
        (lambda: OAuth([FakeProvider(id="Bad Id")], PUBLIC_URL, bool), "provider id"),
        (lambda: OAuth([FakeProvider()], "/relative", bool), "absolute http"),
        (lambda: OAuth([FakeProvider()], "https://x/?q=1", bool), "query"),
        (lambda: create_app("dbname=x", prefix="a b"), "prefix"),
        (lambda: create_app("dbname=x", prefix="/a/../b"), "prefix"),
        (lambda: create_app("dbname=x", secret_key="short"), "16 bytes"),
        (lambda: create_app("dbname=x", payloads="maybe"), "payloads"),  # type: ignore[arg-type]
        (lambda: create_app("dbname=x", auth="admin:pw"), "auth must be"),  # type: ignore[arg-type]
        (lambda: create_app("dbname=x", refresh_seconds=0), "refresh_seconds"),
        (lambda: create_app("dbname=x", session_max_age=1), "session_max_age"),
        (lambda: create_app("dbname=x", throughput_minutes=0), "throughput_minutes"),
        (lambda: create_app("dbname=x", max_payload_bytes=-1), "max_payload_bytes"),
        (lambda: create_app("dbname=x", max_payload_bytes=2**31), "max_payload_bytes"),
    ],
)
def test_configuration_errors(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_prefixes_are_normalised() -> None:
    from starlette.routing import Mount

    for given, mounted in [("asynqpg", "/asynqpg"), ("/a/b/", "/a/b"), ("/", None), ("", None)]:
        app = create_app("dbname=x", prefix=given)
        mounts = [r.path for r in app.routes if isinstance(r, Mount) and r.path != "/static"]
        assert mounts == ([mounted] if mounted else [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--basic-user", "admin"], "Basic auth needs --basic-user and --basic-password"),
        (["--basic-password", "pw"], "Basic auth needs --basic-user"),
        (["--basic-user", "a", "--basic-password", "b", "--github-client-id", "x"], "not both"),
        (["--github-client-id", "x"], "--github-client-secret"),
        (
            ["--github-client-id", "x", "--github-client-secret", "y", "--public-url", PUBLIC_URL],
            "--allow-user",
        ),
        (["--port", "http"], "invalid port"),
        (["--prefix", "a b"], "prefix must be a URL path"),
        (["--secret-key", "short"], "16 bytes"),
        (["--max-payload", "1MB"], "invalid --max-payload '1MB'"),
        (["--max-payload", "2000000000"], "max_payload_bytes must be"),
    ],
)
def test_dashboard_command_usage_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ASYNQPG_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.delenv("ASYNQPG_GITHUB_CLIENT_SECRET", raising=False)
    assert _standalone(["--dsn", "host=127.0.0.1 port=1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_dashboard_command_needs_a_dsn(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNQPG_DSN", raising=False)
    assert _standalone([]) == 2
    assert "no database given" in capsys.readouterr().err


def test_web_public_surface() -> None:
    """``asynqpg_trio.web`` exports what ``__all__`` says, documented, and nothing private."""
    import asynqpg_trio.web as web

    public = {
        name
        for name in dir(web)
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(getattr(web, name), type(web))
    }
    assert set(web.__all__) == public
    for name in web.__all__:
        assert getattr(web, name).__doc__, f"{name} has no docstring"
