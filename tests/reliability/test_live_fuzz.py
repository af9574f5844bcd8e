"""Schemathesis against a live uvicorn server, with valid credentials, on SQLite and PostgreSQL.

Every operation of the server's own OpenAPI document gets generated requests, valid and
invalid: no 5xx, and every answer conforms to the document (status, content type, schema,
``Allow``); valid requests are accepted. That includes the endless change stream: schemathesis
reads each stream for a moment (while kills, revives and interventions happen) and checks every
event against the document. ``tests/server/api/test_openapi.py`` does the same in process; this run
adds the real HTTP stack (uvicorn, httptools, the database over sockets). Then every header the
server reads gets arbitrary values, on every route: never a 5xx, never a traceback.

``AGENTGUARD_FUZZ_EXAMPLES`` sets the examples per operation and mode (10 by default).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
import schemathesis.checks as checks
import schemathesis.specs.openapi.checks as openapi_checks
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from starlette.testclient import TestClient

from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer
from support.fuzzing import (
    beyond_the_grid,
    kill_expiry_now,
    look_alike,
    quick_drill,
    reported_now,
    target_rules,
)
from support.reliability import FUZZ_EXAMPLES, Uvicorn, keys_for
from support.webhook_bodies import registrable

REF = "#/components/schemas/{}"
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


STREAM_PATH = "/api/v1/kill-switch/stream"
STREAM_READ = 1.5  # seconds schemathesis reads each (endless) change stream


def fuzz(operation: Any, mode: Any, base_url: str, session: requests.Session) -> None:
    run = CHECKS + MODE_CHECKS[mode]
    timeout = STREAM_READ if operation.path == STREAM_PATH else 30

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def one(case: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE:
            assume(not look_alike(case))
            assume(not beyond_the_grid(case))
            reported_now(case.body)
            kill_expiry_now(case.body)
            target_rules(case)
            registrable(case.body)
        # Either mode: a valid body beside a broken header or query is served.
        quick_drill(operation.path, case.body)
        case.call_and_validate(base_url=base_url, session=session, checks=run, timeout=timeout)

    one()


# CPU-bound fuzzing: on a loaded machine, beside the other xdist worker, it has taken 130 s.
@pytest.mark.timeout(300)
@pytest.mark.slow
def test_live_server_answers_fuzzed_requests_as_documented(
    start_uvicorn: Callable[..., Uvicorn], database_url: str
) -> None:
    keys = keys_for(database_url, "org_fuzz", admin=["admin"])
    server = start_uvicorn(database_url)
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20 and STREAM_PATH in {op.path for op in operations}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {keys['admin']}"
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    with Churn(server.url, keys["admin"]) as churn:  # every kind of event flows on the streams
        for operation, mode in itertools.product(operations, modes):
            fuzz(operation, mode, server.url, session)
    assert churn.rounds > 0
    # The server is still healthy after it all, and logged no unhandled error.
    assert session.get(f"{server.url}/api/v1/kill-switch/active").status_code == 200
    assert "Traceback" not in server.output()


def test_the_change_stream_is_checked_event_by_event(
    start_uvicorn: Callable[..., Uvicorn], database_url: str
) -> None:
    """Schemathesis validates each streamed event (snapshot, kill, revive, intervention) and
    the JSON in it against the document; a document describing the events wrongly fails."""
    keys = keys_for(database_url, "org_fuzz", admin=["admin"])
    server = start_uvicorn(database_url)
    raw = requests.get(f"{server.url}/api/v1/openapi.json", timeout=10).json()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {keys['admin']}"

    def stream_case(document: dict[str, Any]) -> Any:
        schema = schemathesis.openapi.from_dict(document)
        operation = schema["/api/v1/kill-switch/stream"]["GET"]
        return operation.Case(query={"include": "interventions"}, headers={})

    with Churn(server.url, keys["admin"]) as churn:
        eventually(lambda: churn.rounds >= 1, 10)
        response = stream_case(raw).call(base_url=server.url, session=session, timeout=3)
        kinds = {e.split()[0] for e in response.text.split("event: ")[1:]}
        assert kinds == {"snapshot", "kill", "revive", "intervention"}, response.text
        stream_case(raw).validate_response(response, checks=CHECKS)
        wrong = json.loads(json.dumps(raw))
        events = wrong["paths"][STREAM_PATH]["get"]["responses"]["200"]["content"]
        snapshot = events["text/event-stream"]["schema"]["oneOf"][0]
        snapshot["properties"]["data"]["contentSchema"] = {"$ref": REF.format("KillChangePublic")}
        with pytest.raises(FailureGroup) as failed:
            stream_case(wrong).validate_response(response, checks=CHECKS)
        titles = {getattr(f, "title", None) for f in failed.value.exceptions}
        assert titles == {"SSE event violates schema"}, failed.value.exceptions


# Every header the server reads, and values a client can put on the wire (no CR, LF or NUL).
HEADERS = [
    "Authorization", "Cookie", "X-Request-ID", "If-None-Match", "Last-Event-ID",
    "X-CSRF-Token", "Content-Type", "Accept", "Origin", "Cache-Control",
    "X-Sentinel-Agent-Id", "X-Sentinel-Run-Id", "A-IM", "Accept-Encoding",
]  # fmt: skip
WIRE_BYTES = [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]
TRICKY_VALUES = [
    b"\xb2", b"1\xb9", b"Bearer \xb2", b"Bearer ag_", b"Bearer ag_\xff_x", b"bearer",
    b"agentguard_session=\xb2", b"agentguard_session=.", b"__session=a.b.c", b"9" * 40,
    b'"\xb2"', b"application/json; charset=\xff", b"-1", b"0x10",
]  # fmt: skip
header_values = st.one_of(
    st.sampled_from(TRICKY_VALUES),
    st.lists(st.sampled_from(WIRE_BYTES), max_size=200).map(lambda b: bytes(b).strip(b" \t")),
)


@pytest.mark.slow
def test_live_server_takes_any_header_value_on_every_route(
    start_uvicorn: Callable[..., Uvicorn], database_url: str
) -> None:
    """Arbitrary values of every header the server reads, on every route and method of the
    document (the change stream included), with and without valid credentials: never a 5xx,
    never a traceback in the server's log."""
    keys = keys_for(database_url, "org_fuzz", admin=["admin"])
    server = start_uvicorn(database_url)
    document = requests.get(f"{server.url}/api/v1/openapi.json", timeout=10).json()
    routes = sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, methods in document["paths"].items()
        for method in methods
    )
    client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(30, read=5))
    answers: list[int] = []

    @given(
        route=st.sampled_from(routes),
        name=st.sampled_from(HEADERS),
        value=header_values,
        authenticated=st.booleans(),
    )
    @settings(
        max_examples=FUZZ_EXAMPLES * 30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def one(route: tuple[str, str], name: str, value: bytes, authenticated: bool) -> None:
        method, path = route
        headers: dict[str, Any] = bearer(keys["admin"]) if authenticated else {}
        headers[name] = value
        body = b"{}" if method in ("POST", "PUT") else None
        with client.stream(method, path, headers=headers, content=body) as response:
            status = response.status_code
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
        answers.append(status)
        assert status < 500, (method, path, name, value, status)

    try:
        one()
    finally:
        client.close()
    assert any(code == 200 for code in answers) and any(code == 401 for code in answers)
    assert "Traceback" not in server.output()


class Churn:
    """Kills, revives and interventions in a thread, so streams carry every kind of event."""

    def __init__(self, url: str, key: str) -> None:
        self._client = httpx.Client(base_url=f"{url}/api/v1", headers=bearer(key), timeout=30)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rounds = 0

    def _run(self) -> None:
        target = {"target_type": "agent", "target_id": "churned"}
        while not self._stop.wait(0.3):
            item = {**target, "id": f"iv-{self.rounds}", "action": "send_email",
                    "occurred_at": "2026-04-18T17:00:00Z"}  # fmt: skip
            self._client.post("/interventions", json={"interventions": [item]})
            self._client.post("/kill-switch/kill", json=target)
            self._client.post("/kill-switch/revive", json=target)
            self.rounds += 1

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._client.close()


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
            "series": client.get(f"/api/v1/agents/{quote(target_id, safe='')}/series"),
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
        # Revive takes any id a kill may have stored before ids had to be visible text, so an
        # id only that rule refuses is "not killed" (404) there, never accepted.
        assert refused - {"revive"} == set(answers) - {"revive"}, f"{target_id!r}: {statuses}"
        assert statuses["revive"] in (404, 422), f"{target_id!r}: {statuses}"
