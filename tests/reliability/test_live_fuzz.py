"""Schemathesis against a live uvicorn server, with valid credentials, on SQLite and PostgreSQL.

Every operation of the server's own OpenAPI document except the endless change stream (its
answers are covered in ``tests/server/test_stream.py``) gets generated requests, valid and
invalid: no 5xx, and every answer conforms to the document (status, content type, schema,
``Allow``); valid requests are accepted. ``tests/server/test_openapi.py`` does the same in
process; this run adds the real HTTP stack (uvicorn, httptools, the database over sockets).

``AGENTGUARD_FUZZ_EXAMPLES`` sets the examples per operation and mode (10 by default).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
import schemathesis.checks as checks
import schemathesis.specs.openapi.checks as openapi_checks
from hypothesis import HealthCheck, given, settings
from reliability_harness import FUZZ_EXAMPLES, Uvicorn, keys_for
from starlette.testclient import TestClient

from agentguard.server import KillSwitchServer

UVICORN_REFUSAL = "Invalid HTTP request received."


def status_code_conformance(ctx: Any, response: Any, case: Any) -> Any:
    """Schemathesis's check, except for uvicorn's own 400 to a request it cannot parse (a
    header value with control characters, as negative security cases send), which never
    reaches the app and so is in no document."""
    if response.status_code == 400 and response.text == UVICORN_REFUSAL:
        return None
    return openapi_checks.status_code_conformance(ctx, response, case)


CHECKS = [
    checks.not_a_server_error,
    status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.allow_header_conformance,
]
MODE_CHECKS = {
    schemathesis.GenerationMode.POSITIVE: [openapi_checks.positive_data_acceptance],
    schemathesis.GenerationMode.NEGATIVE: [],
}


def fuzz(operation: Any, mode: Any, base_url: str, session: requests.Session) -> None:
    run = CHECKS + MODE_CHECKS[mode]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def one(case: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE:
            reported_now(case.body)
        case.call_and_validate(base_url=base_url, session=session, checks=run, timeout=30)

    one()


def reported_now(body: Any) -> None:
    """Valid reported times are relative to the server's clock, which no schema can say:
    a generated ``occurred_at`` is set to now (tests/server/test_trust.py tests the window)."""
    if isinstance(body, dict) and isinstance(body.get("interventions"), list):
        now = datetime.now(timezone.utc).isoformat()
        for item in body["interventions"]:
            if isinstance(item, dict) and "occurred_at" in item:
                item["occurred_at"] = now


@pytest.mark.slow
def test_live_server_answers_fuzzed_requests_as_documented(
    start_uvicorn: Callable[..., Uvicorn], database_url: str
) -> None:
    keys = keys_for(database_url, "org_fuzz", admin=["admin"])
    server = start_uvicorn(database_url)
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    every = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in every if op.path != "/api/v1/kill-switch/stream"]
    assert len(operations) == len(every) - 1 >= 19
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {keys['admin']}"
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in itertools.product(operations, modes):
        fuzz(operation, mode, server.url, session)
    # The server is still healthy after it all, and logged no unhandled error.
    assert session.get(f"{server.url}/api/v1/kill-switch/active").status_code == 200
    assert "Traceback" not in server.output()


# -- one answer everywhere for ids of whitespace -------------------------------------------------

# JSON Schema patterns are ECMA-262 regular expressions; there `\s` is this class.
ECMA_SPACE = "\t\n\v\f\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Characters the three regex dialects (ECMA-262, Python, Rust) disagree about as whitespace.
TRICKY = ["\x1c", "\x1f", "\x85", "\ufeff", "\u180e", "\u200b", "\xa0", "\u3000"]


def allowed_by_document(document: dict[str, Any], target_id: str) -> bool:
    """Whether a client validating against the document accepts ``target_id``."""
    schema = document["components"]["schemas"]["KillRequest"]["properties"]["target_id"]
    pattern = schema["pattern"].replace("\\s", ECMA_SPACE)
    return re.search(pattern, target_id) is not None and len(target_id) <= schema["maxLength"]


@pytest.mark.parametrize("target_id", [c * 2 for c in TRICKY] + [f"x{c}" for c in TRICKY[:3]])
def test_an_id_is_valid_everywhere_or_nowhere(target_id: str) -> None:
    """The document, the body and query validators, the store and the /check fast path
    agree on which ids exist: each endpoint taking one accepts it, or all refuse it (422)."""
    server = KillSwitchServer()
    try:
        token = server.create_key("org_a", owner="usr", scopes=["admin"])
        client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
        client.get("/api/v1/kill-switch/active")  # the key is verified: /check takes its fast path
        document = client.get("/api/v1/openapi.json").json()
        target = {"target_type": "agent", "target_id": target_id}
        item = {**target, "id": "iv-1", "action": "a", "occurred_at": "2026-04-18T17:00:00Z"}
        beat = {"instance_id": "i", "agent_id": target_id, "interval": 10, "executed": 0,
                "refused": 0, "failed": 0, "cost_usd": 0, "version": 0}  # fmt: skip
        answers = {
            "kill": client.post("/api/v1/kill-switch/kill", json=target),
            "check": client.get("/api/v1/kill-switch/check", params=target),
            "acks": client.get("/api/v1/kill-switch/acks", params=target),
            "audit": client.get("/api/v1/audit", params={"target_id": target_id}),
            "interventions": client.get("/api/v1/interventions", params={"target_id": target_id}),
            "report": client.post("/api/v1/interventions", json={"interventions": [item]}),
            "heartbeat": client.post("/api/v1/heartbeats", json=beat),
            "agent": client.get(f"/api/v1/agents/{quote(target_id, safe='')}"),
            "revive": client.post("/api/v1/kill-switch/revive", json=target),
        }
    finally:
        server.close()
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert all(code < 500 for code in statuses.values()), statuses
    refused = {name for name, code in statuses.items() if code == 422}
    if allowed_by_document(document, target_id):
        assert not refused, f"the document allows {target_id!r}, the server refuses: {statuses}"
    else:
        assert refused == set(answers), f"{target_id!r}: {statuses}"
