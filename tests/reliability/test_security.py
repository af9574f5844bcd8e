"""Security over real HTTP: scopes cannot be escalated on any endpoint, keys are hashed at rest,
secrets never reach a log, and oversized bodies are refused before they are read.

The endpoints come from the server's own OpenAPI document, so a new one that this file does
not classify fails the test instead of going unchecked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from agentguard import Guard
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import api_keys
from support import eventually
from support.api import bearer
from support.reliability import Uvicorn, keys_for

SCOPES = ("operator", "agent", "read", "metrics")
# Who may call what besides admin, as the design says: agents check, stream, heartbeat and
# report but never kill or revive (a killed agent cannot free itself); read keys never write;
# only admins manage keys; a metrics key reads /metrics and nothing else.
CHECKERS = {"operator", "agent", "read"}
READERS = {"operator", "read"}
REPORTERS = {"operator", "agent"}
ALLOWED: dict[str, set[str]] = {
    "kill": {"operator"},
    "revive": {"operator"},
    "list_revive_requests": READERS,
    "approve_revive": {"operator"},
    "reject_revive": {"operator"},
    "check": CHECKERS,
    "kill_state": CHECKERS,
    "list_active": CHECKERS,
    "stream": CHECKERS,
    "create_key": set(),
    "list_keys": set(),
    "revoke_key": set(),
    "list_audit": READERS,
    "list_interventions": READERS,
    "intervention_counts": READERS,
    "list_acks": READERS,
    "list_agents": READERS,
    "get_agent": READERS,
    "agent_series": READERS,
    "org_series": READERS,
    "report_interventions": REPORTERS,
    "heartbeat": REPORTERS,
    "acknowledge": REPORTERS,
    "acknowledge_batch": REPORTERS,
    "put_checkpoint": REPORTERS,
    "get_checkpoint": REPORTERS,
    "report_sentinel_intervention": REPORTERS,
    "ingest_sentinel_ledger": REPORTERS,
    "finish_run": REPORTERS,
    "metrics": {"operator", "read", "metrics"},
    "create_webhook": set(),  # where kill notifications go, and their secrets: admins only
    "list_webhooks": set(),
    "delete_webhook": set(),
    "test_webhook": set(),
    "list_webhook_deliveries": set(),
    "start_drill": {"operator"},  # it reaches every live instance of its target, as a kill
    "list_drills": READERS,
    "acknowledge_drill": REPORTERS,
}
TARGET = {"target_type": "agent", "target_id": "probe"}
INTERVENTION = {
    "id": "iv-probe",
    "action": "send_email",
    "target_type": "agent",
    "target_id": "probe",
    "occurred_at": "2026-04-18T17:00:00Z",
}
SENTINEL_RECORD = {"intervention_type": "hard_block", "outcome": "blocked",
                         "action_name": "send_email", "agent_id": "probe",
                         "timestamp": "2026-04-18T17:00:00Z"}  # fmt: skip
LEDGER = {"run_id": "run-1", "agent_id": "probe",
          "entries": [{"id": "e-probe", "timestamp": "2026-04-18T17:00:00Z", "action": "send_email",
                       "cost_usd": 0.5, "duration_ms": 3, "outcome": "success"}]}  # fmt: skip
BEAT = {"instance_id": "probe-1", "agent_id": "probe", "interval": 10, "executed": 1,
        "refused": 0, "failed": 0, "cost_usd": 0.5, "version": 0}  # fmt: skip


HOOK = {"url": "https://hooks.example.com/probe", "events": ["kill", "revive"]}
REVIVE_REQUEST = "00000000-0000-4000-8000-000000000000"  # none such: an allowed scope gets 404


def sample(
    operation_id: str, admin_key_id: str, webhook_id: str = "wh_probe"
) -> tuple[str, str, dict[str, Any]]:
    """A well-formed request of each operation: (method, path, httpx arguments)."""
    if operation_id == "metrics":  # the one operation outside /api/v1
        return "GET", "/metrics", {}
    method, path, kwargs = _api_sample(operation_id, admin_key_id, webhook_id)
    return method, f"/api/v1{path}", kwargs


def _api_sample(
    operation_id: str, admin_key_id: str, webhook_id: str
) -> tuple[str, str, dict[str, Any]]:
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {  # paths under /api/v1
        "kill": ("POST", "/kill-switch/kill", {"json": TARGET}),
        "revive": ("POST", "/kill-switch/revive", {"json": TARGET}),
        "list_revive_requests": ("GET", "/kill-switch/revive-requests", {}),
        "approve_revive": (
            "POST",
            f"/kill-switch/revive-requests/{REVIVE_REQUEST}/approve",
            {"json": {}},
        ),
        "reject_revive": (
            "POST",
            f"/kill-switch/revive-requests/{REVIVE_REQUEST}/reject",
            {"json": {}},
        ),
        "check": ("GET", "/kill-switch/check", {"params": TARGET}),
        "kill_state": ("GET", "/kill-switch/state", {}),
        "list_active": ("GET", "/kill-switch/active", {}),
        "stream": ("GET", "/kill-switch/stream", {}),
        "create_key": ("POST", "/keys", {"json": {"scopes": ["admin"]}}),  # the escalation
        "list_keys": ("GET", "/keys", {}),
        "revoke_key": ("DELETE", f"/keys/{admin_key_id}", {}),  # locking the admin out
        "list_audit": ("GET", "/audit", {}),
        "list_interventions": ("GET", "/interventions", {}),
        "intervention_counts": ("GET", "/interventions/counts", {}),
        "list_acks": ("GET", "/kill-switch/acks", {"params": TARGET}),
        "list_agents": ("GET", "/agents", {}),
        "get_agent": ("GET", "/agents/probe", {}),
        "agent_series": ("GET", "/agents/probe/series", {"params": {"window": "1h"}}),
        "org_series": ("GET", "/series", {"params": {"window": "1h"}}),
        "report_interventions": (
            "POST",
            "/interventions",
            {"json": {"interventions": [INTERVENTION]}},
        ),  # fmt: skip
        "heartbeat": ("POST", "/heartbeats", {"json": BEAT}),
        "finish_run": ("POST", "/runs/probe-run/finish", {}),
        "acknowledge": ("POST", "/kill-switch/ack", {"json": {"instance_id": "i", "version": 0}}),
        "acknowledge_batch": (
            "POST",
            "/kill-switch/acks",
            {"json": {"acks": [{"instance_id": "i", "version": 0}]}},
        ),
        "put_checkpoint": ("PUT", "/checkpoints/probe", {"json": {"state": {"next": 1}}}),
        "get_checkpoint": ("GET", "/checkpoints/probe", {}),
        "report_sentinel_intervention": ("POST", "/interventions/", {"json": SENTINEL_RECORD}),
        "ingest_sentinel_ledger": ("POST", "/ingest", {"json": LEDGER}),
        "create_webhook": ("POST", "/webhooks", {"json": HOOK}),  # sending kills elsewhere
        "list_webhooks": ("GET", "/webhooks", {}),
        "delete_webhook": ("DELETE", f"/webhooks/{webhook_id}", {}),  # silencing the pager
        "test_webhook": ("POST", f"/webhooks/{webhook_id}/test", {}),
        "list_webhook_deliveries": ("GET", f"/webhooks/{webhook_id}/deliveries", {}),
        "start_drill": ("POST", "/drills", {"json": {**TARGET, "timeout": 0.1}}),
        "list_drills": ("GET", "/drills", {}),
        "acknowledge_drill": (
            "POST",
            "/drills/00000000-0000-0000-0000-000000000000/ack",
            {"json": {"instance_id": "probe-1", "agent_id": "probe"}},
        ),
    }
    return requests[operation_id]


def operations(url: str) -> dict[str, tuple[str, str]]:
    """Every operation of the live server's OpenAPI document: id -> (METHOD, path)."""
    document = httpx.get(f"{url}/api/v1/openapi.json").json()
    return {
        op["operationId"]: (method.upper(), path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }


def matches(template: str, path: str) -> bool:
    """Whether a concrete path fits an OpenAPI path template."""
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


def call(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> int:
    """The status of one request (for the endless stream: of its head only)."""
    with client.stream(method, path, **kwargs) as response:
        return response.status_code


def test_no_scope_reaches_beyond_its_grant_on_any_endpoint(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"], **{s: [s] for s in SCOPES})
    server = start_uvicorn(url)
    found = operations(server.url)
    assert set(found) == set(ALLOWED), "classify every endpoint's scopes in ALLOWED"
    admin_key_id = keys["admin"].rsplit("_", 1)[0]
    webhook_id = httpx.post(
        f"{server.url}/api/v1/webhooks", json=HOOK, headers=bearer(keys["admin"])
    ).json()["id"]

    def state() -> dict[str, Any]:
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(keys["admin"])) as c:
            deliveries = c.get(f"/webhooks/{webhook_id}/deliveries").json()
            return {
                "webhooks": [w["id"] for w in c.get("/webhooks").json()["data"]],
                "deliveries": sorted(d["event_id"] for d in deliveries["data"]),
                "active": c.get("/kill-switch/active").json(),
                "keys": c.get("/keys").json()["count"],
                "audit": c.get("/audit").json()["count"],
                "interventions": c.get("/interventions").json()["count"],
                "agents": c.get("/agents").json()["count"],
                "checkpoint": c.get("/checkpoints/probe").status_code,
                "drills": c.get("/drills").json()["count"],
            }

    refused = 0
    for scope in SCOPES:
        with httpx.Client(base_url=server.url, headers=bearer(keys[scope]), timeout=10) as c:
            before = state()
            for operation_id in [o for o in found if scope not in ALLOWED[o]]:
                method, path, kwargs = sample(operation_id, admin_key_id, webhook_id)
                assert method == found[operation_id][0], operation_id
                assert matches(found[operation_id][1], path), operation_id
                status = call(c, method, path, kwargs)
                assert status == 403, (scope, operation_id, status)
                refused += 1
            assert state() == before, f"a refused request of a {scope} key left a trace"
            for operation_id in [o for o in found if scope in ALLOWED[o]]:
                method, path, kwargs = sample(operation_id, admin_key_id, webhook_id)
                status = call(c, method, path, kwargs)
                assert status not in (401, 403), (scope, operation_id, status)
    assert refused == sum(len(SCOPES) - len(granted) for granted in ALLOWED.values())
    # The admin key was never revoked, and only the operator changed kill state.
    audit = httpx.get(f"{server.url}/api/v1/audit", headers=bearer(keys["admin"])).json()
    changes = [e for e in audit["data"] if e["action"] in ("kill", "revive")]
    assert changes and all(e["actor"].startswith("usr_operator") for e in changes)
    assert not [e for e in audit["data"] if e["action"] == "key.revoke"]


def test_a_console_session_has_its_keys_scopes_only(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", agent=["agent"], read=["read"])
    server = start_uvicorn(url)
    for scope in ("agent", "read"):
        with httpx.Client(base_url=server.url) as browser:
            signed_in = browser.post("/kill-switch/session", json={"api_key": keys[scope]})
            assert signed_in.status_code == 200
            session = signed_in.json()
            assert (session["scopes"], session["can_kill"]) == ([scope], False)
            csrf = {"X-CSRF-Token": session["csrf_token"]}
            for path in ("/api/v1/kill-switch/kill", "/api/v1/kill-switch/revive"):
                assert browser.post(path, json=TARGET, headers=csrf).status_code == 403
            created = browser.post("/api/v1/keys", json={"scopes": ["admin"]}, headers=csrf)
            assert created.status_code == 403
    assert (
        httpx.get(
            f"{server.url}/api/v1/kill-switch/check", params=TARGET, headers=bearer(keys["read"])
        ).json()["is_killed"]
        is False
    )


# -- keys at rest --------------------------------------------------------------------------------


def secret_of(token: str) -> str:
    """The secret part of ``ag_<id>_<secret>``; the id is not secret."""
    return token.rsplit("_", 1)[1]


def test_keys_are_stored_hashed(start_uvicorn: Callable[..., Uvicorn], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"])
    server = start_uvicorn(url)
    tokens = [keys["admin"]]
    for scopes in (["agent"], ["read", "operator"]):
        created = httpx.post(
            f"{server.url}/api/v1/keys", json={"scopes": scopes}, headers=bearer(keys["admin"])
        ).json()
        tokens.append(created["secret"])
    reader = KillSwitchServer(url)
    try:
        with reader.database.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(api_keys))]
    finally:
        reader.close()
    assert len(rows) == len(tokens)
    for token in tokens:
        row = next(r for r in rows if token.startswith(r["id"] + "_"))
        assert not any(secret_of(token) in str(value) for value in row.values())
        assert row["secret_hash"] == hashlib.sha256(token.encode()).hexdigest()
    # Nowhere in the database files either (pages, WAL), not even in freed space.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("agentguard.db*"))
    assert raw
    for token in tokens:
        assert secret_of(token).encode() not in raw


# -- secrets in logs -----------------------------------------------------------------------------


def test_secrets_never_reach_a_log(
    start_uvicorn: Callable[..., Uvicorn],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url, log_level="debug")  # access log and every debug message
    api = f"{server.url}/api/v1"
    secrets = [secret_of(k) for k in keys.values()]

    # A console session: its cookie and CSRF token are secrets too. (Not captured here: this
    # process plays the browser, and httpcore's own debug log shows the Set-Cookie it received.)
    with httpx.Client(base_url=server.url) as browser:
        session = browser.post("/kill-switch/session", json={"api_key": keys["agent"]}).json()
        secrets += [browser.cookies["agentguard_session"], session["csrf_token"]]
        browser.post("/api/v1/kill-switch/ack", json={"instance_id": "i", "version": 0},
                     headers={"X-CSRF-Token": session["csrf_token"]})  # fmt: skip
        browser.post("/api/v1/kill-switch/kill", json=TARGET)  # no CSRF token: 403

    with caplog.at_level(logging.DEBUG):  # every logger of this process, httpx's included
        created = httpx.post(
            f"{api}/keys", json={"scopes": ["agent"]}, headers=bearer(keys["admin"])
        ).json()
        new = created["secret"]
        secrets.append(secret_of(new))
        assert httpx.get(f"{api}/kill-switch/check", params=TARGET, headers=bearer(new)).is_success
        # Wrong secrets: an unknown key, a known key id with a wrong secret, a malformed token.
        wrong = [
            "ag_Zz9Zz9Zz_" + "Q" * 40,
            new.rsplit("_", 1)[0] + "_" + "W" * 40,
            "ag_not-a-key-" + "E" * 30,
        ]
        secrets += ["Q" * 40, "W" * 40, "E" * 30]
        for token in wrong:
            answer = httpx.get(f"{api}/kill-switch/check", params=TARGET, headers=bearer(token))
            assert answer.status_code == 401
            assert httpx.post(f"{server.url}/kill-switch/session",
                              json={"api_key": token}).status_code == 401  # fmt: skip
        # A remote guard whose key is revoked under it, and a strict one with a wrong key.
        guard = Guard(server.url, api_key=new, max_staleness=1.0)
        assert guard.wait_until_synced(5)
        key_id = new.rsplit("_", 1)[0]
        httpx.delete(f"{api}/keys/{key_id}", headers=bearer(keys["admin"]))
        strict = Guard(server.url, api_key=wrong[0], mode="strict")
        with pytest.raises(Exception):  # noqa: B017 - refused either way; the logs matter
            strict.check("agent", "probe")
        strict.close()
        guard.close()

        # Webhook secrets: a signing secret, a PagerDuty routing key, the token in a Slack URL.
        # Deliveries to them fail (no such host here) and the failures are logged.
        hooks = [
            {"url": "https://hooks.example.com/x", "events": ["kill"]},
            {"url": "https://hooks.slack.com/services/T0/B0/SlackToken123", "events": ["kill"],
             "format": "slack"},
            {"url": "https://events.pagerduty.com/v2/enqueue?token=QueryToken456",
             "events": ["kill"], "format": "pagerduty", "routing_key": "RoutingKey789"},
        ]  # fmt: skip
        for hook in hooks:
            made = httpx.post(f"{api}/webhooks", json=hook, headers=bearer(keys["admin"]))
            assert made.status_code == 200, made.text
            if made.json()["secret"]:
                secrets.append(made.json()["secret"].removeprefix("whsec_"))
        secrets += ["SlackToken123", "QueryToken456", "RoutingKey789"]
        killed = httpx.post(f"{api}/kill-switch/kill", json=TARGET, headers=bearer(keys["admin"]))
        assert killed.is_success
        eventually(lambda: server.output().count("could not deliver kill") == 3, 15)

    logs = {"server": server.output(), "this process": caplog.text}
    assert "GET /api/v1/kill-switch/check" in logs["server"]  # the access log was captured
    for where, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached the {where} log"


# -- body size -----------------------------------------------------------------------------------


def raw_request(port: int, head: str, body: bytes, *, timeout: float = 5.0) -> int:
    """Send a request head and part of a body on a raw socket; return the answer's status.

    The rest of the body is never sent: a server that waited for it would not answer, and the
    read times out (``timeout``) instead.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def head(method: str, path: str, key: str | None, extra: str) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def test_oversized_bodies_are_refused_before_they_are_read(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"])
    server = start_uvicorn(url)
    document = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    with_body = [
        (
            method.upper(),
            path.replace("{key}", "k")
            .replace("{drill_id}", "0")
            .replace("{request_id}", "00000000-0000-4000-8000-000000000000"),
        )
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    ]
    assert len(with_body) >= 7
    with_body.append(("POST", "/kill-switch/session"))  # the console's sign-in
    announced = "Content-Length: 100000000\r\n"
    for method, path in with_body:
        status = raw_request(server.port, head(method, path, keys["admin"], announced),
                             b'{"target_type": "agent", ' + b" " * 4000)  # fmt: skip
        assert status == 413, (method, path, status)
    # Unauthenticated: refused before the body too.
    status = raw_request(server.port, head("POST", "/api/v1/kill-switch/kill", None, announced),
                         b"{")  # fmt: skip
    assert status == 401

    # Chunked, with no length announced: refused once it passes 1 MiB, though it never ends.
    chunk = b" " * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17))  # 1.06 MiB
    status = raw_request(
        server.port,
        head("POST", "/api/v1/kill-switch/kill", keys["admin"], "Transfer-Encoding: chunked\r\n"),
        b'10\r\n{"target_type": \r\n' + chunked,
    )
    assert status == 413
    # The same encoding under the limit is read and accepted: the size made the difference.
    body = json.dumps(TARGET).encode()
    small = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status = raw_request(
        server.port,
        head("POST", "/api/v1/kill-switch/kill", keys["admin"], "Transfer-Encoding: chunked\r\n"),
        small,
    )
    assert status == 200


def test_an_in_process_server_logs_no_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """The same for a mounted server (in-process), through the root logger at DEBUG."""
    server = KillSwitchServer()
    try:
        with caplog.at_level(logging.DEBUG):
            token = server.create_key("org_a", owner="usr", scopes=["admin"])
            client = TestClient(server.app, headers=bearer(token))
            created = client.post("/api/v1/keys", json={"scopes": ["agent"]}).json()["secret"]
            client.post("/api/v1/kill-switch/kill", json=TARGET)
            TestClient(server.app).get(
                "/api/v1/kill-switch/check", params=TARGET, headers=bearer(created + "x")
            )
            client.delete(f"/api/v1/keys/{created.rsplit('_', 1)[0]}")
            TestClient(server.app).get(
                "/api/v1/kill-switch/check", params=TARGET, headers=bearer(created)
            )
        for secret in (secret_of(token), secret_of(created)):
            assert secret not in caplog.text
    finally:
        server.close()
