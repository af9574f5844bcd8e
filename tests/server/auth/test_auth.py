"""Credentials and scopes: API keys, Clerk session tokens, and the host app's own user."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from agentguard.server import ClerkAuth, HostUserAuth
from agentguard.server.store.tables import api_keys
from support.api import bearer

KILL_BODY = {"target_type": "agent", "target_id": "bot"}
INTERVENTION = {
    "id": "iv-1",
    "action": "send_email",
    "target_type": "agent",
    "target_id": "bot",
    "occurred_at": "2026-04-18T17:00:00Z",
}


# -- API keys ------------------------------------------------------------------------------------


def test_missing_credentials_are_401(server: Any) -> None:
    client = TestClient(server.app)
    for method, path in [
        ("GET", "/api/v1/kill-switch/check?target_type=agent&target_id=x"),
        ("POST", "/api/v1/kill-switch/kill"),
        ("GET", "/api/v1/kill-switch/active"),
        ("GET", "/api/v1/keys"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/interventions"),
    ]:
        response = client.request(method, path, json=KILL_BODY if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ag_AAAAAAAA_" + "A" * 40,  # well-formed, unknown
        "Bearer ag_nonsense",
        "Bearer not-a-key-at-all",
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
def test_bad_credentials_are_401(server: Any, header: str) -> None:
    response = TestClient(server.app).get(
        "/api/v1/kill-switch/check",
        params={"target_type": "agent", "target_id": "x"},
        headers={"Authorization": header},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_a_wrong_secret_for_a_real_key_id_is_401(server: Any, api: Any) -> None:
    a = api(server)
    key_id, secret = a.token.rsplit("_", 1)
    forged = f"{key_id}_{'x' * len(secret)}"
    response = TestClient(server.app).get("/api/v1/kill-switch/active", headers=bearer(forged))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        (
            "admin",
            {"kill", "revive", "check", "active", "audit", "interventions", "report", "keys"},
        ),
        ("operator", {"kill", "revive", "check", "active", "audit", "interventions", "report"}),
        ("agent", {"check", "active", "report"}),
        ("read", {"check", "active", "audit", "interventions"}),
    ],
)
def test_scopes(server: Any, api: Any, scope: str, allowed: set[str]) -> None:
    admin = api(server, owner="usr_admin")
    admin.kill("agent", "killed")
    key = api(server, scopes=(scope,))
    c = key.client
    calls = {
        "kill": lambda: c.post("/api/v1/kill-switch/kill", json=KILL_BODY),
        "revive": lambda: c.post(
            "/api/v1/kill-switch/revive", json={"target_type": "agent", "target_id": "killed"}
        ),
        "check": lambda: key.check("agent", "killed"),
        "active": lambda: key.get("/api/v1/kill-switch/active"),
        "audit": lambda: key.get("/api/v1/audit"),
        "interventions": lambda: key.get("/api/v1/interventions"),
        "report": lambda: c.post("/api/v1/interventions", json={"interventions": [INTERVENTION]}),
        "keys": lambda: key.get("/api/v1/keys"),
    }
    for name, call in calls.items():
        response = call()
        if name in allowed:
            assert response.status_code == 200, (name, response.text)
        else:
            assert response.status_code == 403, (name, response.text)
            body = response.json()
            assert body["error"] == "forbidden"
            required = "admin" if name == "keys" else "operator"
            assert body["required_scope"] == required
            assert repr(required) in body["detail"]


def test_an_agent_key_cannot_free_its_agent(server: Any, api: Any) -> None:
    operator = api(server, scopes=("operator",))
    agent = api(server, scopes=("agent",))
    operator.kill("agent", "bot")
    assert agent.revive("agent", "bot").status_code == 403
    assert agent.client.post("/api/v1/keys", json={"scopes": ["admin"]}).status_code == 403
    assert agent.check("agent", "bot").json()["is_killed"] is True


def test_keys_are_stored_hashed(server: Any, api: Any) -> None:
    a = api(server)
    created = a.client.post("/api/v1/keys", json={"scopes": ["agent"], "name": "ci"}).json()
    secret = created["secret"]
    with server.database.read() as conn:
        stored = conn.execute(select(api_keys)).all()
    flat = repr([tuple(r) for r in stored])
    for token in (secret, a.token):
        assert token not in flat
        assert token.rsplit("_", 1)[1] not in flat
    row = next(r for r in stored if r.id == created["id"])
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_key_lifecycle_over_http(server: Any, api: Any) -> None:
    admin = api(server, owner="usr_admin")
    response = admin.client.post(
        "/api/v1/keys", json={"scopes": ["agent"], "owner": "usr_bot", "name": "bot key"}
    )
    assert response.status_code == 200
    created = response.json()
    assert created["secret"].startswith(created["id"] + "_")
    assert created["owner"] == "usr_bot" and created["scopes"] == ["agent"]
    assert created["created_by"] == admin.actor
    assert created["organization_id"] == "org_a"
    listed = admin.get("/api/v1/keys").json()
    assert listed["count"] == 2
    assert all("secret" not in k for k in listed["data"])
    assert {k["id"] for k in listed["data"]} == {created["id"], admin.key_id}

    bot = TestClient(server.app, headers=bearer(created["secret"]))
    check = {"target_type": "agent", "target_id": "x"}
    assert bot.get("/api/v1/kill-switch/check", params=check).status_code == 200
    revoked = admin.client.delete(f"/api/v1/keys/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_by"] == admin.actor and revoked.json()["revoked_at"]
    # Revoked at once, even though this process had the key cached.
    assert bot.get("/api/v1/kill-switch/check", params=check).status_code == 401
    assert admin.client.delete(f"/api/v1/keys/{created['id']}").status_code == 409
    missing = admin.client.delete("/api/v1/keys/ag_doesnotx")
    assert missing.status_code == 404 and missing.json()["field"] == "key_id"


def test_owner_defaults_to_the_caller(server: Any, api: Any) -> None:
    admin = api(server, owner="usr_boss")
    created = admin.client.post("/api/v1/keys", json={"scopes": ["read", "agent"]}).json()
    assert created["owner"] == "usr_boss"
    assert created["scopes"] == ["agent", "read"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes.0"),
        ({}, "scopes"),
        ({"scopes": ["read"], "organization_id": "org_b"}, "organization_id"),
    ],
)
def test_bad_key_requests(server: Any, api: Any, body: dict[str, Any], field: str) -> None:
    response = api(server).client.post("/api/v1/keys", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


# -- Clerk session tokens ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str, Any]:
    """A signing key, its PEM public key, and an unrelated signing key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, pem, other


def clerk_token(signing_key: Any, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": "user_2abc",
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 60,
        "azp": "https://console.example.com",
        "iss": "https://clerk.example.com",
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, signing_key, algorithm="RS256")


@pytest.fixture
def clerk_server(make_server: Any, database_url: str, rsa_keys: Any) -> Any:
    _, pem, _ = rsa_keys
    auth = ClerkAuth(pem, authorized_parties=["https://console.example.com"])
    server = make_server(database_url, auth=auth)
    server.start()
    return server


def test_clerk_v2_token_as_bearer(clerk_server: Any, rsa_keys: Any) -> None:
    private, _, _ = rsa_keys
    token = clerk_token(private, o={"id": "org_v2", "rol": "member", "slg": "acme"}, v=2)
    client = TestClient(clerk_server.app, headers=bearer(token))
    record = client.post("/api/v1/kill-switch/kill", json=KILL_BODY).json()
    assert record["organization_id"] == "org_v2"
    assert record["killed_by"] == "user_2abc"
    # A member is an operator: no key management.
    assert client.get("/api/v1/keys").status_code == 403


def test_clerk_v1_token_in_session_cookie(clerk_server: Any, rsa_keys: Any) -> None:
    private, _, _ = rsa_keys
    token = clerk_token(private, org_id="org_v1", org_role="org:admin")
    client = TestClient(clerk_server.app, cookies={"__session": token})
    record = client.post("/api/v1/kill-switch/kill", json=KILL_BODY).json()
    assert record["organization_id"] == "org_v1"
    assert client.get("/api/v1/keys").status_code == 200  # org admin -> admin scope


@pytest.mark.parametrize(
    ("claims", "signer", "message"),
    [
        ({"exp": int(time.time()) - 120, "org_id": "org_x"}, "private", "expired"),
        ({"azp": "https://evil.example.com", "org_id": "org_x"}, "private", "unauthorized party"),
        ({"org_id": "org_x"}, "other", "invalid session token"),
        ({}, "private", "no active organization"),
        ({"org_id": "org_x", "sub": None}, "private", "invalid session token"),
    ],
)
def test_clerk_rejects(
    clerk_server: Any, rsa_keys: Any, claims: dict[str, Any], signer: str, message: str
) -> None:
    private, _, other = rsa_keys
    token = clerk_token(private if signer == "private" else other, **claims)
    response = TestClient(clerk_server.app, headers=bearer(token)).get("/api/v1/kill-switch/active")
    assert response.status_code == 401
    assert message in response.json()["detail"]


def test_clerk_rejects_an_unsigned_token(clerk_server: Any) -> None:
    now = int(time.time())
    claims = {"sub": "user_x", "org_id": "org_x", "exp": now + 60}
    token = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    response = TestClient(clerk_server.app, headers=bearer(token)).get("/api/v1/kill-switch/active")
    assert response.status_code == 401


def test_api_keys_still_work_beside_clerk(clerk_server: Any, api: Any) -> None:
    a = api(clerk_server)
    assert a.kill().status_code == 200


# -- the host app's own user ---------------------------------------------------------------------


class HeaderAuth(AuthenticationBackend):
    """The host's own (toy) authentication: ``X-User: name@org``."""

    async def authenticate(self, conn: HTTPConnection) -> Any:
        value = conn.headers.get("x-user")
        if not value:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(value)


def resolve(user: Any) -> tuple[str, str, list[str]] | None:
    name, _, org = user.username.partition("@")
    if name == "guest":
        return None
    return org, name, ["admin"] if name == "root" else ["read"]


@pytest.fixture
def host_client(make_server: Any, database_url: str) -> TestClient:
    server = make_server(database_url, auth=HostUserAuth(resolve))

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.user.display_name}")

    host = Starlette(
        routes=[Route("/", home), Mount("/guard", server.app)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )
    return TestClient(host)


def test_host_user_pass_through(host_client: TestClient) -> None:
    root = {"X-User": "root@org_host"}
    assert host_client.get("/", headers=root).text == "hello root@org_host"
    record = host_client.post("/guard/api/v1/kill-switch/kill", json=KILL_BODY, headers=root)
    assert record.status_code == 200
    assert record.json()["killed_by"] == "root"
    assert record.json()["organization_id"] == "org_host"
    reader = {"X-User": "ann@org_host"}
    assert (
        host_client.post(
            "/guard/api/v1/kill-switch/kill", json=KILL_BODY, headers=reader
        ).status_code
        == 403
    )
    check = host_client.get(
        "/guard/api/v1/kill-switch/check",
        params={"target_type": "agent", "target_id": "bot"},
        headers=reader,
    )
    assert check.json()["is_killed"] is True
    other_org = {"X-User": "ann@org_other"}
    check = host_client.get(
        "/guard/api/v1/kill-switch/check",
        params={"target_type": "agent", "target_id": "bot"},
        headers=other_org,
    )
    assert check.json()["is_killed"] is False


def test_host_user_that_maps_to_nothing_is_401(host_client: TestClient) -> None:
    for headers in ({"X-User": "guest@org_host"}, {}):
        response = host_client.get("/guard/api/v1/kill-switch/active", headers=headers)
        assert response.status_code == 401
