"""The console over HTTP: the page and its assets, sign-in sessions, cookie flags and CSRF.

What the page does in a browser is in ``test_console_browser.py``.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any

import httpx
import pytest
from itsdangerous.timed import TimestampSigner
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from starlette.testclient import TestClient

from agentguard.server import HostUserAuth, KillSwitchServer
from agentguard.server.auth.session import CSRF_HEADER, SESSION_COOKIE
from support.api import bearer

KILL = {"target_type": "agent", "target_id": "rogue-bot", "reason": "Drained $3k in 4 minutes"}
STATIC = resources.files("agentguard.server.console").joinpath("static")


def set_cookie(response: httpx.Response) -> dict[str, str]:
    """The attributes of the session cookie a response sets (names lower-cased)."""
    header = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )
    morsel = SimpleCookie(header)[SESSION_COOKIE]
    attributes = {k: str(v) for k, v in morsel.items() if v}
    flags = {part.strip().lower() for part in header.split(";")}
    attributes["httponly"] = str("httponly" in flags)
    attributes["secure"] = str("secure" in flags)
    return {"value": morsel.value, **attributes}


def sign_in(client: TestClient, token: str, prefix: str = "") -> dict[str, Any]:
    response = client.post(f"{prefix}/kill-switch/session", json={"api_key": token})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def console(make_server: Any) -> tuple[KillSwitchServer, TestClient]:
    """An in-memory server and a browser-like client with no credentials of its own."""
    server: KillSwitchServer = make_server()
    return server, TestClient(server.app)


# -- the page ------------------------------------------------------------------------------------


def test_the_page_and_its_assets(console: tuple[KillSwitchServer, TestClient]) -> None:
    _, client = console
    page = client.get("/kill-switch")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'self'"):
        assert directive in csp
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    assert page.headers["x-content-type-options"] == "nosniff"
    # Relative URLs only, nothing from another origin.
    assert 'href="kill-switch/static/console.css"' in page.text
    assert 'src="kill-switch/static/console.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert 'href="/' not in page.text and 'src="/' not in page.text

    assets = [(f.name, "text/javascript") for f in STATIC.iterdir() if f.name.endswith(".js")]
    assert len(assets) > 1 and ("console.js", "text/javascript") in assets  # the entry module
    for name, media_type in [*assets, ("console.css", "text/css")]:
        asset = client.get(f"/kill-switch/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
        assert asset.content == STATIC.joinpath(name).read_bytes()
        again = client.get(
            f"/kill-switch/static/{name}", headers={"if-none-match": asset.headers["etag"]}
        )
        assert again.status_code == 304
    for name in ("secrets.txt", "kill-switch.html"):  # the page is served at its own path only
        missing = client.get(f"/kill-switch/static/{name}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_the_scripts_never_parse_strings_as_html() -> None:
    for module in (f for f in STATIC.iterdir() if f.name.endswith(".js")):
        script = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, module.name
        # (The SVG namespace is a name that elements are made in, not a URL anything fetches.)
        named = script.replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in named and "https://" not in named, module.name
    api = STATIC.joinpath("api.js").read_text()
    assert 'export const API = "api/v1/";' in api  # relative to the mount point
    assert 'export const SESSION = "kill-switch/session";' in api


def test_the_root_and_a_trailing_slash_lead_to_the_page(
    console: tuple[KillSwitchServer, TestClient],
) -> None:
    _, client = console
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "kill-switch"
    assert client.get("/").url.path == "/kill-switch"
    assert client.get("/kill-switch/").url.path == "/kill-switch"


# -- signing in ----------------------------------------------------------------------------------


def test_sign_in_sets_a_locked_down_cookie(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"], name="console")
    response = client.post("/kill-switch/session", json={"api_key": token})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    session = response.json()
    key_id = token.rsplit("_", 1)[0]
    assert session["organization_id"] == "org_a"
    assert session["user_id"] == "usr_ops"
    assert session["actor"] == f"usr_ops (key {key_id})"
    assert session["method"] == "console"
    assert session["scopes"] == ["operator"]
    assert session["can_kill"] is True and session["can_read"] is True
    assert session["can_manage_webhooks"] is False  # webhooks are an admin's
    assert len(session["csrf_token"]) >= 32
    cookie = set_cookie(response)
    assert cookie["httponly"] == "True"
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert cookie["secure"] == "False"  # plain http
    assert int(cookie["max-age"]) == server.sessions.max_age
    # The cookie carries the key id, never the key's secret.
    assert token not in response.headers["set-cookie"]
    assert token.rsplit("_", 1)[1] not in response.headers["set-cookie"]


def test_the_cookie_is_secure_over_https(make_server: Any) -> None:
    server: KillSwitchServer = make_server()
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    client = TestClient(server.app, base_url="https://console.example.com")
    response = client.post("/kill-switch/session", json={"api_key": token})
    assert set_cookie(response)["secure"] == "True"


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        ({"json": {"api_key": "ag_AAAAAAAA_" + "A" * 40}}, 401, "unauthorized"),
        ({"json": {"api_key": "not a key"}}, 401, "unauthorized"),
        ({"json": {"api_key": "  "}}, 422, "validation_error"),
        ({"json": {}}, 422, "validation_error"),
        ({"json": {"api_key": "x", "organization_id": "org_b"}}, 422, "validation_error"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
        # A form post (what a cross-site page can send without asking) is not accepted.
        ({"data": {"api_key": "x"}}, 415, "unsupported_media_type"),
    ],
)
def test_bad_sign_ins(
    console: tuple[KillSwitchServer, TestClient],
    request_kwargs: dict[str, Any],
    status: int,
    error: str,
) -> None:
    _, client = console
    response = client.post("/kill-switch/session", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_a_revoked_key_cannot_sign_in(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    server.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="usr_admin")
    response = client.post("/kill-switch/session", json={"api_key": token})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_who_is_signed_in(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    missing = client.get("/kill-switch/session")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    token = server.create_key("org_a", owner="usr_ops", scopes=["read"])
    signed_in = sign_in(client, token)
    current = client.get("/kill-switch/session").json()
    assert current == signed_in
    assert current["can_kill"] is False and current["can_read"] is True
    # A Bearer key is a session of its own: no cookie, no CSRF token.
    with_key = TestClient(server.app).get("/kill-switch/session", headers=bearer(token)).json()
    assert with_key["method"] == "api_key" and with_key["csrf_token"] is None


# -- using the session ---------------------------------------------------------------------------


def test_the_api_accepts_the_session_with_its_csrf_token(
    console: tuple[KillSwitchServer, TestClient],
) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    csrf = sign_in(client, token)["csrf_token"]
    assert client.get("/api/v1/kill-switch/active").json() == {"data": [], "count": 0}

    refused = client.post("/api/v1/kill-switch/kill", json=KILL)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert CSRF_HEADER in refused.json()["detail"]
    wrong = client.post("/api/v1/kill-switch/kill", json=KILL, headers={CSRF_HEADER: "x" * 43})
    assert wrong.status_code == 403
    assert server.index("org_a").get("agent", "rogue-bot") is None  # nothing happened

    killed = client.post("/api/v1/kill-switch/kill", json=KILL, headers={CSRF_HEADER: csrf})
    assert killed.status_code == 200
    assert killed.json()["killed_by"] == f"usr_ops (key {token.rsplit('_', 1)[0]})"
    revived = client.post(
        "/api/v1/kill-switch/revive",
        json={"target_type": "agent", "target_id": "rogue-bot"},
        headers={CSRF_HEADER: csrf},
    )
    assert revived.status_code == 200
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["data"]]
    assert actions[:2] == ["revive", "kill"]


def test_a_bearer_request_ignores_the_cookie_and_needs_no_token(
    console: tuple[KillSwitchServer, TestClient],
) -> None:
    server, client = console
    reader = server.create_key("org_a", owner="usr_reader", scopes=["read"])
    operator = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    sign_in(client, reader)
    # With an Authorization header the request is the key's, not the cookie's.
    response = client.post("/api/v1/kill-switch/kill", json=KILL, headers=bearer(operator))
    assert response.status_code == 200
    assert response.json()["killed_by"].startswith("usr_ops")


def test_a_read_only_session_cannot_kill(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_reader", scopes=["read"])
    csrf = sign_in(client, token)["csrf_token"]
    response = client.post("/api/v1/kill-switch/kill", json=KILL, headers={CSRF_HEADER: csrf})
    assert response.status_code == 403
    assert response.json()["required_scope"] == "operator"


def test_revoking_the_key_ends_its_sessions(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    sign_in(client, token)
    assert client.get("/api/v1/kill-switch/active").status_code == 200
    server.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="usr_admin")
    response = client.get("/api/v1/kill-switch/active")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    current = client.get("/kill-switch/session")
    assert current.status_code == 401
    assert set_cookie(current)["max-age"] == "0"  # the dead cookie is removed


def test_forged_expired_and_foreign_cookies_are_refused(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: KillSwitchServer = make_server(session_secret="one secret")
    other: KillSwitchServer = make_server(session_secret="another secret")
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    client = TestClient(server.app)
    sign_in(client, token)
    genuine = client.cookies[SESSION_COOKIE]

    def refused(value: str) -> str:
        response = TestClient(server.app, cookies={SESSION_COOKIE: value}).get(
            "/api/v1/kill-switch/active"
        )
        assert response.status_code == 401
        detail: str = response.json()["detail"]
        return detail

    # The payload changed under the original signature.
    # (itsdangerous starts a zlib-compressed payload with "."; that mark stays as it is.)
    mark = "." if genuine.startswith(".") else ""
    payload, _, signature = genuine[len(mark) :].partition(".")
    tampered = mark + ("A" if payload[0] != "A" else "B") + payload[1:] + "." + signature
    assert "invalid console session" in refused(tampered)
    assert "invalid console session" in refused("garbage")
    # A cookie signed by another server's secret (e.g. another deployment) is worthless here.
    other_key = other.create_key("org_a", owner="usr_ops", scopes=["admin"])
    other_client = TestClient(other.app)
    sign_in(other_client, other_key)
    assert "invalid console session" in refused(other_client.cookies[SESSION_COOKIE])
    # Signed thirteen hours ago: past the twelve-hour lifetime.
    past = int(time.time()) - 13 * 3600
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: past)
    stale = server.sessions.issue(server.keys.verify(token))[0]  # type: ignore[arg-type]
    monkeypatch.undo()
    assert "expired" in refused(stale)


def test_a_session_sees_only_its_own_organization(make_server: Any) -> None:
    server: KillSwitchServer = make_server()
    org_b = server.create_key("org_b", owner="usr_b", scopes=["admin"])
    TestClient(server.app, headers=bearer(org_b)).post("/api/v1/kill-switch/kill", json=KILL)
    client = TestClient(server.app)
    session = sign_in(client, server.create_key("org_a", owner="usr_a", scopes=["admin"]))
    assert session["organization_id"] == "org_a"
    assert client.get("/api/v1/kill-switch/active").json() == {"data": [], "count": 0}
    entries = client.get("/api/v1/audit").json()["data"]
    assert entries and {e["organization_id"] for e in entries} == {"org_a"}
    csrf = {CSRF_HEADER: session["csrf_token"]}
    revive = {"target_type": "agent", "target_id": "rogue-bot"}
    assert client.post("/api/v1/kill-switch/revive", json=revive, headers=csrf).status_code == 404
    assert server.index("org_b").get("agent", "rogue-bot") is not None


def test_sign_out(console: tuple[KillSwitchServer, TestClient]) -> None:
    server, client = console
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    csrf = sign_in(client, token)["csrf_token"]
    assert client.delete("/kill-switch/session").status_code == 403  # no CSRF token
    assert client.get("/kill-switch/session").status_code == 200
    response = client.delete("/kill-switch/session", headers={CSRF_HEADER: csrf})
    assert response.status_code == 204
    cookie = set_cookie(response)
    assert cookie["max-age"] == "0" and cookie["path"] == "/"
    assert client.get("/kill-switch/session").status_code == 401
    assert client.get("/api/v1/kill-switch/active").status_code == 401
    # Signing out without a session (or with a dead one) is harmless.
    assert TestClient(server.app).delete("/kill-switch/session").status_code == 204


def test_a_signed_out_session_is_refused_everywhere_even_from_a_copy_of_its_cookie(
    make_server: Any, database_url: str
) -> None:
    """Sign-out ends the session itself, not just the browser's cookie: a copy kept (or stolen)
    before it is refused, on this replica and on another one sharing the database."""
    one = make_server(database_url, session_secret="s" * 32)
    two = make_server(database_url, session_secret="s" * 32)
    token = one.create_key("org_a", owner="usr_ops", scopes=["operator"])
    browser = TestClient(one.app)
    csrf = sign_in(browser, token)["csrf_token"]
    cookie = browser.cookies[SESSION_COOKIE]
    elsewhere = TestClient(two.app)
    sign_in(elsewhere, token)  # another session of the same key
    copies = [TestClient(one.app), TestClient(two.app)]
    for copy in copies:
        copy.cookies.set(SESSION_COOKIE, cookie)
        assert copy.get("/api/v1/kill-switch/active").status_code == 200
    response = browser.delete("/kill-switch/session", headers={CSRF_HEADER: csrf})
    assert response.status_code == 204
    for copy in copies:
        refused = copy.get("/api/v1/kill-switch/active")
        assert refused.status_code == 401, refused.text
        assert "signed out" in refused.json()["detail"]
        assert copy.get("/kill-switch/session").status_code == 401
    # Only that session ended: the key's other session goes on, and the key still signs in.
    assert elsewhere.get("/api/v1/kill-switch/active").status_code == 200
    sign_in(browser, token)
    assert browser.get("/api/v1/kill-switch/active").status_code == 200


# -- mounted in a host ---------------------------------------------------------------------------


def test_mounted_under_a_prefix(make_server: Any) -> None:
    server: KillSwitchServer = make_server()
    host = Starlette(routes=[Mount("/ops/guard", server.app)])
    client = TestClient(host)
    assert client.get("/ops/guard/kill-switch").status_code == 200
    assert client.get("/ops/guard/", follow_redirects=True).url.path == "/ops/guard/kill-switch"
    token = server.create_key("org_a", owner="usr_ops", scopes=["operator"])
    response = client.post("/ops/guard/kill-switch/session", json={"api_key": token})
    assert set_cookie(response)["path"] == "/ops/guard/"  # the page and the API, nothing else
    csrf = response.json()["csrf_token"]
    killed = client.post(
        "/ops/guard/api/v1/kill-switch/kill", json=KILL, headers={CSRF_HEADER: csrf}
    )
    assert killed.status_code == 200


class HeaderAuth(AuthenticationBackend):
    """A host app's own (toy) sign-in: ``X-User: name``."""

    async def authenticate(self, conn: HTTPConnection) -> Any:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def test_a_host_session_needs_no_console_sign_in(make_server: Any) -> None:
    server: KillSwitchServer = make_server(
        auth=HostUserAuth(lambda user: ("org_host", user.username, ["operator"]))
    )
    host = Starlette(
        routes=[Mount("/guard", server.app)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )
    client = TestClient(host, headers={"X-User": "ann"})
    session = client.get("/guard/kill-switch/session").json()
    assert session["method"] == "host"
    assert session["user_id"] == "ann" and session["organization_id"] == "org_host"
    assert session["can_kill"] is True
    assert session["csrf_token"] is None  # the host's own session; no console cookie
