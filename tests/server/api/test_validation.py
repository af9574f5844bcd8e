"""Bad input: a clear 4xx naming the field, in one error shape, and nothing half-written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from agentguard.server.store.tables import audit_log, interventions, kill_switches, org_versions

KILL = "/api/v1/kill-switch/kill"
REVIVE = "/api/v1/kill-switch/revive"


def rows(server: Any) -> tuple[int, int, int, int]:
    """Row counts of every table a write touches."""
    with server.database.read() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (kill_switches, org_versions, audit_log, interventions)
        )


BAD_KILLS = [
    ({"target_type": "agent", "target_id": "x", "reason": "r" * 2001}, "reason", "2000"),
    ({"target_type": "robot", "target_id": "x"}, "target_type", "agent"),
    ({"target_type": "agent", "target_id": ""}, "target_id", ""),
    ({"target_type": "agent", "target_id": "   "}, "target_id", ""),
    ({"target_type": "agent", "target_id": "x" * 257}, "target_id", "256"),
    ({"target_type": "agent", "target_id": "x", "force": True}, "force", "unknown field"),
    ({"target_id": "x"}, "target_type", "required"),
    ({"target_type": "agent"}, "target_id", "required"),
    ({"target_type": "agent", "target_id": 7}, "target_id", "string"),
    ({"target_type": "agent", "target_id": "x", "reason": 5}, "reason", "string"),
    ({"target_type": "agent", "target_id": "a\x00b"}, "target_id", ""),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD_KILLS)
def test_bad_kill_bodies_name_the_field(
    server: Any, api: Any, body: dict[str, Any], field: str, words: str
) -> None:
    a = api(server)
    before = rows(server)
    response = a.client.post(KILL, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "validation_error"
    assert error["field"] == field
    assert error["detail"].startswith(f"{field}: ")
    assert words in error["detail"]
    assert rows(server) == before


def test_reason_of_exactly_2000_and_id_of_256_are_fine(server: Any, api: Any) -> None:
    a = api(server)
    response = a.kill("agent", "x" * 256, reason="r" * 2000)
    assert response.status_code == 200
    assert len(response.json()["reason"]) == 2000


def test_bad_revive_body(server: Any, api: Any) -> None:
    a = api(server)
    # A reason is audited (and required with require_reason); other fields are refused.
    response = a.client.post(REVIVE, json={"target_type": "agent", "target_id": "x", "force": 1})
    assert response.status_code == 422
    assert response.json()["field"] == "force"


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b'{"target_type": "agent", "target_id": "x",}', b"", b"   "]
)
def test_malformed_json_is_400(server: Any, api: Any, raw: bytes) -> None:
    a = api(server)
    before = rows(server)
    response = a.client.post(KILL, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert rows(server) == before


@pytest.mark.parametrize("raw", [b"[]", b'"agent"', b"42", b"null"])
def test_a_body_that_is_not_an_object(server: Any, api: Any, raw: bytes) -> None:
    response = api(server).client.post(
        KILL, content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"].endswith("must be a JSON object")


def test_body_over_1_mib_is_413_by_content_length(server: Any, api: Any) -> None:
    a = api(server)
    body = json.dumps({"target_type": "agent", "target_id": "x", "reason": "r" * (1024 * 1024)})
    before = rows(server)
    response = a.client.post(KILL, content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert rows(server) == before


async def test_body_over_1_mib_is_413_when_streamed_without_length(server: Any, api: Any) -> None:
    a = api(server)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1  # 40 x 64 KiB = 2.5 MiB in all, no Content-Length
        return {"type": "http.request", "body": b" " * 65536, "more_body": pulled < 40}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": KILL,
        "raw_path": KILL.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "headers": [
            (b"authorization", f"Bearer {a.token}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    await server.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "payload_too_large"
    # It stopped reading just past 1 MiB (17 chunks), not at the end of the body.
    assert pulled == 17


def test_batch_of_1001_interventions_is_422_and_stores_none(server: Any, api: Any) -> None:
    a = api(server)
    item = {
        "action": "send_email",
        "target_type": "agent",
        "target_id": "x",
        "occurred_at": "2026-04-18T17:00:00Z",
    }
    batch = [{**item, "id": f"iv-{i}"} for i in range(1001)]
    response = a.client.post("/api/v1/interventions", json={"interventions": batch})
    assert response.status_code == 422
    assert response.json()["field"] == "interventions"
    batch[500]["target_type"] = "robot"
    response = a.client.post("/api/v1/interventions", json={"interventions": batch[:1000]})
    assert response.status_code == 422
    assert response.json()["field"] == "interventions.500.target_type"
    assert rows(server)[3] == 0


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/kill-switch/active", {"limit": 0}, "limit"),
        ("/api/v1/kill-switch/active", {"limit": 1001}, "limit"),
        ("/api/v1/kill-switch/active", {"limit": "many"}, "limit"),
        ("/api/v1/kill-switch/active", {"skip": -1}, "skip"),
        ("/api/v1/kill-switch/check", {"target_type": "agent"}, "target_id"),
        ("/api/v1/kill-switch/check", {"target_type": "robot", "target_id": "x"}, "target_type"),
        ("/api/v1/kill-switch/check", {"target_type": "agent", "target_id": ""}, "target_id"),
        (
            "/api/v1/kill-switch/check",
            {"target_type": "agent", "target_id": "x" * 257},
            "target_id",
        ),
        ("/api/v1/audit", {"since": "yesterday"}, "since"),
        ("/api/v1/audit", {"action": "explode"}, "action"),
        ("/api/v1/audit", {"limit": 5000}, "limit"),
        ("/api/v1/interventions", {"type": "SOFT"}, "type"),
        ("/api/v1/interventions", {"skip": -5}, "skip"),
        ("/api/v1/interventions/counts", {"limit": 0}, "limit"),
        ("/api/v1/keys", {"limit": 0}, "limit"),
    ],
)
def test_bad_query_parameters(
    server: Any, api: Any, path: str, params: dict[str, Any], field: str
) -> None:
    a = api(server)
    a.check()  # caches the key, so /check goes through the fast path first
    response = a.get(path, **params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert response.json()["field"] == field


def test_limit_bounds_are_inclusive(server: Any, api: Any) -> None:
    a = api(server)
    assert a.get("/api/v1/kill-switch/active", limit=1).status_code == 200
    assert a.get("/api/v1/kill-switch/active", limit=1000, skip=0).status_code == 200


def test_unknown_path_and_wrong_method_use_the_error_shape(server: Any, api: Any) -> None:
    a = api(server)
    missing = a.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = a.client.get(KILL)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
