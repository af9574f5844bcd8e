"""Trust findings: cookie-authenticated writes must come from this origin, JSON bodies must be
JSON (and say each key once), Clerk tokens are checked for issuer, party and subject, and the
trailing-slash redirect does not echo the Host header.

The real-browser reproduction of the CSRF is in test_csrf_browser.py; the revocation race in
tests/reliability/test_revocation_race.py.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from starlette.testclient import TestClient

from agentguard.server import ClerkAuth, HostUserAuth, KillSwitchServer
from support.api import bearer

KILL = "/api/v1/kill-switch/kill"
ISSUER = "https://clerk.example.com"
PARTY = "https://console.example.com"
# What Chromium sends with a form another port of the same host auto-submits.
SAME_SITE = {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver:8001"}
CROSS_ORIGIN = {"Origin": "http://testserver:8001"}  # a browser without Sec-Fetch-Site
OWN_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}


def target(n: str) -> dict[str, str]:
    return {"target_type": "agent", "target_id": f"bot-{n}"}


@pytest.fixture(scope="module")
def rsa_key() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, pem


def clerk_token(private: Any, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": "user_2abc",
        "org_id": "org_c",
        "org_role": "org:admin",
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 60,
        "azp": PARTY,
        "iss": ISSUER,
        **claims,
    }
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, private, "RS256")


@pytest.fixture
def clerk(make_server: Any, database_url: str, rsa_key: tuple[Any, str]) -> KillSwitchServer:
    _, pem = rsa_key
    server: KillSwitchServer = make_server(
        database_url, auth=ClerkAuth(pem, authorized_parties=[PARTY], issuer=ISSUER)
    )
    server.start()
    return server


def killed(server: KillSwitchServer, n: str) -> bool:
    return server.index("org_c").get("agent", f"bot-{n}") is not None


# -- cookies: same origin only --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [SAME_SITE, CROSS_ORIGIN, {"Origin": "null"}])
def test_a_clerk_cookie_write_from_another_origin_is_403(
    clerk: KillSwitchServer, rsa_key: tuple[Any, str], headers: dict[str, str]
) -> None:
    private, _ = rsa_key
    client = TestClient(clerk.app, cookies={"__session": clerk_token(private)})
    response = client.post(KILL, json=target("x"), headers=headers)
    assert response.status_code == 403, response.text
    sent = "Sec-Fetch-Site" if "Sec-Fetch-Site" in headers else "Origin"
    assert sent in response.json()["detail"]
    assert not killed(clerk, "x")


def test_a_clerk_cookie_works_from_its_own_origin_and_outside_browsers(
    clerk: KillSwitchServer, rsa_key: tuple[Any, str]
) -> None:
    private, _ = rsa_key
    client = TestClient(clerk.app, cookies={"__session": clerk_token(private)})
    assert client.post(KILL, json=target("1"), headers=OWN_ORIGIN).status_code == 200
    assert client.post(KILL, json=target("2"), headers={"Origin": "http://testserver"}).is_success
    assert client.post(KILL, json=target("3")).status_code == 200  # no browser headers at all
    # Reading is not a forgery risk (and cross-origin reads are the browser's to refuse).
    assert client.get("/api/v1/kill-switch/active", headers=SAME_SITE).status_code == 200


def test_a_bearer_token_is_not_a_cookie(clerk: KillSwitchServer, rsa_key: tuple[Any, str]) -> None:
    private, _ = rsa_key
    clerk_bearer = TestClient(clerk.app, headers=bearer(clerk_token(private)))
    assert clerk_bearer.post(KILL, json=target("b"), headers=SAME_SITE).status_code == 200
    key = clerk.create_key("org_c", owner="usr_ops", scopes=["operator"])
    api_key = TestClient(clerk.app, headers=bearer(key))
    assert api_key.post(KILL, json=target("k"), headers=SAME_SITE).status_code == 200


class HeaderAuth(AuthenticationBackend):
    """The host's own (toy) authentication: ``X-User: name@org`` (think: a cookie)."""

    async def authenticate(self, conn: HTTPConnection) -> Any:
        value = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(value)) if value else None


def test_a_host_user_write_from_another_origin_is_403(make_server: Any, database_url: str) -> None:
    def resolve(user: Any) -> tuple[str, str, list[str]]:
        name, _, org = user.username.partition("@")
        return org, name, ["operator"]

    server = make_server(database_url, auth=HostUserAuth(resolve))
    host = Starlette(
        routes=[Mount("/guard", server.app)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )
    client = TestClient(host, headers={"X-User": "ann@org_c"})
    for headers in (SAME_SITE, CROSS_ORIGIN):
        response = client.post(f"/guard{KILL}", json=target("h"), headers=headers)
        assert response.status_code == 403, response.text
    assert server.index("org_c").get("agent", "bot-h") is None
    assert client.post(f"/guard{KILL}", json=target("h"), headers=OWN_ORIGIN).status_code == 200


# -- bodies: JSON, each key once; body-less requests need no Content-Type ------------------------


def test_a_text_plain_body_is_415_even_when_it_is_json(
    clerk: KillSwitchServer, rsa_key: tuple[Any, str]
) -> None:
    private, _ = rsa_key
    client = TestClient(clerk.app, cookies={"__session": clerk_token(private)})
    body = b'{"target_type": "agent", "target_id": "bot-t", "reason": "a=b"}\r\n'
    response = client.post(KILL, content=body, headers={**OWN_ORIGIN, "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert "Content-Type" in response.json()["detail"]
    assert not killed(clerk, "t")
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert client.post(KILL, content=body, headers={**OWN_ORIGIN, **charset}).status_code == 200


def test_a_repeated_key_is_400_naming_it(clerk: KillSwitchServer) -> None:
    key = clerk.create_key("org_c", owner="usr_ops", scopes=["operator"])
    client = TestClient(clerk.app, headers={**bearer(key), "Content-Type": "application/json"})
    body = b'{"target_type": "agent", "target_id": "bot-d", "target_id": "bot-other"}'
    response = client.post(KILL, content=body)
    assert response.status_code == 400
    assert response.json()["field"] == "target_id"
    assert not killed(clerk, "d") and not killed(clerk, "other")


def test_a_body_less_request_needs_no_content_type(clerk: KillSwitchServer) -> None:
    admin = clerk.create_key("org_c", owner="usr_admin", scopes=["admin"])
    other = clerk.create_key("org_c", owner="usr_x", scopes=["read"])
    client = TestClient(clerk.app, headers=bearer(admin))
    response = client.delete(f"/api/v1/keys/{other.rsplit('_', 1)[0]}")
    assert response.status_code == 200, response.text
    assert "content-type" not in response.request.headers


# -- Clerk claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"iss": "https://evil.example.com"}, "invalid session token"),
        ({"iss": None}, "invalid session token"),
        ({"azp": None}, "unauthorized party"),
        ({"azp": "https://evil.example.com"}, "unauthorized party"),
        ({"sub": ""}, "sub"),
        ({"sub": "   "}, "sub"),
        ({"sub": 42}, "invalid session token"),
    ],
)
def test_clerk_checks_issuer_party_and_subject(
    clerk: KillSwitchServer, rsa_key: tuple[Any, str], claims: dict[str, Any], says: str
) -> None:
    private, _ = rsa_key
    client = TestClient(clerk.app, headers=bearer(clerk_token(private, **claims)))
    response = client.post(KILL, json=target("c"))
    assert response.status_code == 401, response.text
    assert says in response.json()["detail"]
    assert not killed(clerk, "c")


def test_clerk_without_issuer_or_parties_configured_does_not_ask_for_them(
    make_server: Any, rsa_key: tuple[Any, str]
) -> None:
    private, pem = rsa_key
    server = make_server(None, auth=ClerkAuth(pem))
    client = TestClient(server.app, headers=bearer(clerk_token(private, iss=None, azp=None)))
    assert client.post(KILL, json=target("n")).status_code == 200


# -- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mount", ["", "/guard"])
def test_the_trailing_slash_redirect_is_relative(make_server: Any, mount: str) -> None:
    server = make_server()
    app = Starlette(routes=[Mount(mount, server.app)]) if mount else server.app
    client = TestClient(app, follow_redirects=False)
    response = client.get(
        f"{mount}/api/v1/agents/", params={"limit": "3"}, headers={"Host": "evil.example"}
    )
    assert response.status_code == 307
    assert response.headers["location"] == f"{mount}/api/v1/agents?limit=3"
    assert client.get(f"{mount}/api/v1/nothing/").status_code == 404
