"""The wire protocol: defined once, importable without the server, and the server speaks it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from agentguard import protocol
from agentguard.protocol import (
    REVIVE_REQUEST_STATUSES,
    SCOPES,
    WEBHOOK_EVENTS,
    WEBHOOK_FORMATS,
    DeliveryStatusName,
    DrillStatusName,
    HealthName,
    InstanceStatusName,
    ScopeName,
)
from agentguard.server import KillSwitchServer


def loaded_after(statement: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_protocol_needs_nothing_of_the_server() -> None:
    heavy = ["agentguard.server", "starlette", "sqlalchemy", "httpx"]
    assert loaded_after("import agentguard.protocol", heavy) == []


def test_import_agentguard_leaves_the_http_client_for_later() -> None:
    remote = ["httpx", "httpx_sse", "tenacity", "agentguard.remote.source"]
    assert loaded_after("import agentguard", remote) == []


def test_scope_names_are_one_list() -> None:
    assert SCOPES == get_args(ScopeName) == ("admin", "operator", "agent", "read", "metrics")


def enums(schema: dict[str, Any]) -> list[list[str]]:
    """The enums a property schema allows (through arrays and nullable ``anyOf``)."""
    if "enum" in schema:
        return [schema["enum"]]
    found = enums(schema["items"]) if "items" in schema else []
    for option in schema.get("anyOf", []):
        found += enums(option)
    return found


def test_the_server_documents_the_protocols_names() -> None:
    app = KillSwitchServer("sqlite://").app
    doc: dict[str, Any] = TestClient(app).get("/api/v1/openapi.json").json()
    expected = {
        "scopes": list(SCOPES),
        "health": list(get_args(HealthName)),
        "status": list(get_args(InstanceStatusName)),
        "events": list(WEBHOOK_EVENTS),
        "format": list(WEBHOOK_FORMATS),
    }
    # A field name that means something else in one model.
    own = {
        "WebhookDeliveryPublic": {"status": list(get_args(DeliveryStatusName))},
        "DrillPublic": {"status": list(get_args(DrillStatusName))},
        "ReviveRequestPublic": {"status": list(REVIVE_REQUEST_STATUSES)},
    }
    seen = set()
    for name, schema in doc["components"]["schemas"].items():
        for field, allowed in expected.items():
            allowed = own.get(name, {}).get(field, allowed)
            for enum in enums(schema.get("properties", {}).get(field, {})):
                assert enum == allowed, f"{name}.{field}"
                seen.add(field)
    assert seen == set(expected)


def client_and_server_models() -> list[tuple[type[BaseModel], type[BaseModel]]]:
    from agentguard.server import schemas
    from agentguard.server.api.fleet import HeartbeatAnswer

    return [
        (protocol.ApiKey, schemas.ApiKeyPublic),
        (protocol.ApiKeyCreated, schemas.ApiKeyCreated),
        (protocol.AgentInstance, schemas.InstancePublic),
        (protocol.Agent, schemas.AgentPublic),
        (protocol.InstanceAck, schemas.InstanceAck),
        (protocol.Acks, schemas.AcksPublic),
        (protocol.HeartbeatReply, HeartbeatAnswer),
        (protocol.Webhook, schemas.WebhookPublic),
        (protocol.WebhookCreated, schemas.WebhookCreated),
        (protocol.WebhookDelivery, schemas.WebhookDeliveryPublic),
        (protocol.Drill, schemas.DrillPublic),
        (protocol.ReviveRequest, schemas.ReviveRequestPublic),
        (protocol.ReviveApproval, schemas.ReviveApprovalPublic),
    ]


@pytest.mark.parametrize(
    ("client", "server"), client_and_server_models(), ids=lambda model: model.__name__
)
def test_the_client_reads_only_what_the_server_sends(
    client: type[BaseModel], server: type[BaseModel]
) -> None:
    """The client's answers are tolerant (unknown fields kept, optional ones defaulted) where the
    server's are strict (constraints documented in OpenAPI); this keeps the two from drifting:
    every field the client reads is one the server writes, and one the client requires the
    server always sends."""
    assert set(client.model_fields) <= set(server.model_fields)
    for name, field in client.model_fields.items():
        if field.is_required():
            assert server.model_fields[name].is_required(), name
