"""The OpenAPI 3.1 document: complete, valid, and what the server really answers."""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import pytest
import schemathesis
import schemathesis.checks as checks
import schemathesis.specs.openapi.checks as openapi_checks
from hypothesis import HealthCheck, assume, given, settings
from starlette.testclient import TestClient

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.fuzzing import (
    beyond_the_grid,
    kill_expiry_now,
    look_alike,
    quick_drill,
    reported_now,
    target_rules,
)
from support.reliability import FUZZ_EXAMPLES
from support.webhook_bodies import registrable

OPERATIONS = {
    ("post", "/api/v1/kill-switch/kill"),
    ("post", "/api/v1/kill-switch/revive"),
    ("get", "/api/v1/kill-switch/revive-requests"),
    ("post", "/api/v1/kill-switch/revive-requests/{request_id}/approve"),
    ("post", "/api/v1/kill-switch/revive-requests/{request_id}/reject"),
    ("get", "/api/v1/kill-switch/check"),
    ("get", "/api/v1/kill-switch/active"),
    ("get", "/api/v1/kill-switch/state"),
    ("get", "/api/v1/kill-switch/stream"),
    ("post", "/api/v1/keys"),
    ("get", "/api/v1/keys"),
    ("delete", "/api/v1/keys/{key_id}"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/interventions"),
    ("get", "/api/v1/interventions"),
    ("get", "/api/v1/interventions/counts"),
    # fleet
    ("post", "/api/v1/heartbeats"),
    ("post", "/api/v1/kill-switch/ack"),
    ("post", "/api/v1/kill-switch/acks"),
    ("get", "/api/v1/kill-switch/acks"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{agent_id}"),
    ("get", "/api/v1/agents/{agent_id}/series"),
    ("post", "/api/v1/runs/{run_id}/finish"),
    ("get", "/api/v1/series"),
    ("put", "/api/v1/checkpoints/{key}"),
    ("get", "/api/v1/checkpoints/{key}"),
    # the AgentSentinel SDK's own paths
    ("post", "/api/v1/interventions/"),
    ("post", "/api/v1/ingest"),
    # operations
    ("get", "/metrics"),
    # webhooks
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("delete", "/api/v1/webhooks/{webhook_id}"),
    ("post", "/api/v1/webhooks/{webhook_id}/test"),
    ("get", "/api/v1/webhooks/{webhook_id}/deliveries"),
    # drills
    ("post", "/api/v1/drills"),
    ("get", "/api/v1/drills"),
    ("post", "/api/v1/drills/{drill_id}/ack"),
}


@pytest.fixture
def document() -> dict[str, Any]:
    return TestClient(KillSwitchServer().app).get("/api/v1/openapi.json").json()


def test_every_operation_is_documented(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    found = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert found == OPERATIONS
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An agentguard API key: `Authorization: Bearer ag_<id>_<secret>`",
    }
    assert document["security"] == [{"apiKey": []}]


def test_error_responses_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    error = {"$ref": "#/components/schemas/ErrorResponse"}

    def codes(method: str, path: str) -> set[str]:
        responses = paths[path][method]["responses"]
        for code, response in responses.items():
            if not code.startswith("2"):
                assert response["content"]["application/json"]["schema"] == error
        return set(responses)

    assert codes("post", "/api/v1/kill-switch/kill") == {
        "200",
        "400",
        "401",
        "403",
        "409",
        "413",
        "415",
        "422",
        "503",
    }
    # 202: where revives need approval, a request; 409: one is pending already.
    assert codes("post", "/api/v1/kill-switch/revive") == {
        "200",
        "202",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "503",
    }
    # 503: the database is unreachable (/check too, for a key this process has not seen yet).
    assert codes("get", "/api/v1/kill-switch/check") == {"200", "401", "403", "422", "503"}
    assert codes("delete", "/api/v1/keys/{key_id}") == {
        "200",
        "401",
        "403",
        "404",
        "409",
        "422",
        "503",
    }
    # The AgentSentinel SDK's paths answer what it expects: 201 (it takes 200 or 201), 202.
    body_errors = {"400", "401", "403", "413", "415", "422", "503"}
    assert codes("post", "/api/v1/interventions/") == {"201", *body_errors}
    assert codes("post", "/api/v1/ingest") == {"202", *body_errors}
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorResponse"]["required"]) == {"error", "detail"}
    check = schemas["CheckResponse"]
    assert set(check["properties"]) == {
        "is_killed",
        "target_type",
        "target_id",
        "reason",
        "killed_at",
    }
    assert set(check["required"]) == set(check["properties"])


def test_parameters_and_bodies(document: dict[str, Any]) -> None:
    active = document["paths"]["/api/v1/kill-switch/active"]["get"]["parameters"]
    by_name = {p["name"]: p for p in active}
    assert by_name["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 100,
    }
    assert by_name["skip"]["schema"]["minimum"] == 0
    assert not by_name["limit"]["required"]
    check = document["paths"]["/api/v1/kill-switch/check"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in check} == {"target_type": True, "target_id": True}
    kill = document["components"]["schemas"]["KillRequest"]
    assert kill["additionalProperties"] is False
    assert kill["properties"]["reason"]["anyOf"][0]["maxLength"] == 2000
    assert kill["properties"]["target_type"]["enum"] == [
        "agent", "run", "mission", "tool", "organization", "selector"
    ]  # fmt: skip
    assert kill["properties"]["duration"]["anyOf"][0]["pattern"]
    assert kill["properties"]["expires_at"]["anyOf"][0]["format"] == "date-time"


def test_agentsentinel_identity_headers_are_parameters(document: dict[str, Any]) -> None:
    for path in ("/api/v1/interventions/", "/api/v1/ingest"):
        parameters = document["paths"][path]["post"]["parameters"]
        assert {(p["name"], p["in"], p["required"]) for p in parameters} == {
            ("X-Sentinel-Agent-Id", "header", False),
            ("X-Sentinel-Run-Id", "header", False),
        }
        for parameter in parameters:
            assert parameter["schema"]["maxLength"] == 256
    entry = document["components"]["schemas"]["SentinelLedgerEntry"]
    assert entry["additionalProperties"] is False
    assert set(entry["required"]) == {"id", "timestamp", "action", "cost_usd", "duration_ms",
                                      "outcome"}  # fmt: skip


def test_component_schemas_are_valid_json_schema(document: dict[str, Any]) -> None:
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_mounted_document_names_its_prefix() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    host = Starlette(routes=[Mount("/guard", KillSwitchServer().app)])
    document = TestClient(host).get("/guard/api/v1/openapi.json").json()
    assert document["servers"] == [{"url": "/guard"}]


def test_real_responses_match_the_document(server: Any, api: Any) -> None:
    """Every answer of a realistic session validates against its documented schema."""
    a = api(server)
    document = a.client.get("/api/v1/openapi.json").json()
    interventions = {
        "interventions": [
            {
                "id": "iv-1",
                "action": "send_email",
                "target_type": "agent",
                "target_id": "bot",
                "occurred_at": "2026-04-18T17:00:00Z",
            }
        ]
    }
    calls = [
        (
            "post",
            "/api/v1/kill-switch/kill",
            {"json": {"target_type": "agent", "target_id": "bot"}},
        ),
        (
            "post",
            "/api/v1/kill-switch/kill",
            {"json": {"target_type": "agent", "target_id": "bot"}},
        ),
        ("post", "/api/v1/kill-switch/kill", {"json": {"target_type": "robot", "target_id": "x"}}),
        (
            "post",
            "/api/v1/kill-switch/kill",
            {"content": b"{", "headers": {"content-type": "application/json"}},
        ),
        (
            "get",
            "/api/v1/kill-switch/check",
            {"params": {"target_type": "agent", "target_id": "bot"}},
        ),
        (
            "get",
            "/api/v1/kill-switch/check",
            {"params": {"target_type": "agent", "target_id": "bot"}},
        ),
        ("get", "/api/v1/kill-switch/active", {}),
        (
            "post",
            "/api/v1/kill-switch/revive",
            {"json": {"target_type": "agent", "target_id": "bot"}},
        ),
        (
            "post",
            "/api/v1/kill-switch/revive",
            {"json": {"target_type": "agent", "target_id": "bot"}},
        ),
        ("post", "/api/v1/keys", {"json": {"scopes": ["agent"]}}),
        ("get", "/api/v1/keys", {}),
        ("delete", "/api/v1/keys/ag_missing1", {}),
        ("get", "/api/v1/audit", {}),
        ("post", "/api/v1/interventions", {"json": interventions}),
        ("get", "/api/v1/interventions", {}),
        ("get", "/api/v1/interventions/counts", {}),
    ]
    seen = set()
    for method, path, kwargs in calls:
        response = a.client.request(method, path, **kwargs)
        operation = document["paths"][path.replace("ag_missing1", "{key_id}")][method]
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, (method, path, response.status_code)
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        jsonschema.validate(
            response.json(),
            {"$ref": ref, "components": document["components"]},
            cls=jsonschema.Draft202012Validator,
        )
        seen.add(response.status_code)
    assert seen == {200, 400, 404, 409, 422}
    unauthorized = TestClient(server.app).get("/api/v1/kill-switch/active")
    assert unauthorized.status_code == 401


# -- a short schemathesis run against the in-process app -----------------------------------------

CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.allow_header_conformance,
]
# Invalid requests must be refused, valid ones accepted. (Unknown query parameters count as
# invalid to the generator but are ignored by the server, so rejection is left to `st run`.)
MODE_CHECKS = {
    schemathesis.GenerationMode.POSITIVE: [openapi_checks.positive_data_acceptance],
    schemathesis.GenerationMode.NEGATIVE: [],
}


def fuzzer(operation: Any, mode: Any, token: str) -> Any:
    """A hypothesis test of one operation in one generation mode."""
    run = CHECKS + MODE_CHECKS[mode]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE:
            assume(not look_alike(case))
            assume(not beyond_the_grid(case))
            reported_now(case.body)
            kill_expiry_now(case.body)
            target_rules(case)
            registrable(case.body)
        # Either mode: a valid body beside a broken header or query is served.
        quick_drill(operation.path, case.body)
        case.call_and_validate(headers=bearer(token), checks=run)

    return fuzz


# CPU-bound fuzzing: on a loaded machine, beside the other xdist worker, it has taken 135 s at
# 25 examples per operation and mode. AGENTGUARD_FUZZ_EXAMPLES sets how many (10 by default), as
# for the live fuzz against real servers (tests/reliability/test_live_fuzz.py).
@pytest.mark.timeout(300)
def test_fuzzed_requests_get_documented_answers(make_server: Any) -> None:
    """Schemathesis-generated requests (valid and invalid) all get documented answers."""
    server: KillSwitchServer = make_server()
    token = server.create_key("org_fuzz", owner="usr_fuzz", scopes=["admin"])
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", server.app)
    every = [result.ok() for result in schema.get_all_operations()]
    assert len(every) == len(OPERATIONS)
    # The stream never ends by design; tests/server/test_stream.py covers its answers.
    operations = [op for op in every if op.path != "/api/v1/kill-switch/stream"]
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in itertools.product(operations, modes):
        fuzzer(operation, mode, token)()
