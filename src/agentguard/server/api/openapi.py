"""The OpenAPI 3.1 document, generated from the endpoint declarations and pydantic models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..._version import __version__
from ...protocol import API, DELTA_IM, VERSION_HEADER
from ..auth.principal import PERMISSIONS
from ..problems import DESCRIPTIONS
from ..schemas import ErrorResponse, InterventionPublic
from .endpoints import ENDPOINTS, Endpoint
from .metrics import METRICS_PATH, metrics_operation
from .state import KillStateChangesPublic
from .stream import KEEPALIVE_HEADER, STREAM_MODELS, STREAM_PATH, StreamQuery

REF = "#/components/schemas/{model}"
OPENAPI_PATH = f"{API}/openapi.json"


class OpenApiEndpoint:
    """``GET /openapi.json``: the document, built once per mount point."""

    def __init__(self, *, clerk: bool = False) -> None:
        self.clerk = clerk  # documents the Clerk session cookie
        self._documents: dict[str, dict[str, Any]] = {}

    async def serve(self, request: Request) -> JSONResponse:
        server_url = request.scope.get("root_path", "") or "/"
        document = self._documents.get(server_url)
        if document is None:
            document = build_openapi(server_url=server_url, clerk=self.clerk)
            self._documents[server_url] = document
        return JSONResponse(document)


def build_openapi(
    endpoints: Sequence[Endpoint] = ENDPOINTS, *, server_url: str = "/", clerk: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API served under ``server_url``."""
    models: list[type[BaseModel]] = [
        ErrorResponse,
        *STREAM_MODELS,
        InterventionPublic,
        KillStateChangesPublic,
    ]
    for e in endpoints:
        models.append(e.response)
        models.extend(model for _, model, _ in e.alternatives)
        if e.body is not None:
            models.append(e.body)
    unique = list(dict.fromkeys(models))
    refs, defs = models_json_schema(
        [(m, "validation" if _is_input(m, endpoints) else "serialization") for m in unique],
        ref_template=REF,
    )
    schemas = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, refs)
    paths[STREAM_PATH] = {"get": _stream_operation()}
    paths[METRICS_PATH] = {"get": metrics_operation()}
    security_schemes: dict[str, Any] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An agentguard API key: `Authorization: Bearer ag_<id>_<secret>`",
        }
    }
    if clerk:
        security_schemes["clerkSession"] = {
            "type": "apiKey",
            "in": "cookie",
            "name": "__session",
            "description": "A Clerk session token (also accepted as a Bearer token)",
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentguard",
            "version": __version__,
            "description": "Kill switch for AI agents: kill, revive and check targets; "
            "API keys, audit log and interventions. Every call is scoped to the "
            "organization of its credential.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security_schemes},
        "security": [{name: []} for name in security_schemes],
    }


def _is_input(model: type[BaseModel], endpoints: Sequence[Endpoint]) -> bool:
    return any(e.body is model for e in endpoints)


def _operation(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    mode = "serialization"
    response_ref = refs[(e.response, mode)]
    error_ref = refs[(ErrorResponse, mode)]
    success = str(e.status)
    responses: dict[str, Any] = {
        success: {
            "description": e.response.__doc__ or "OK",
            "content": {"application/json": {"schema": response_ref}},
        }
    }
    if e.versioned:
        responses[success]["headers"] = {
            VERSION_HEADER: {
                "description": "The organization's kill-state version after this change",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if e.conditional:
        responses[success]["headers"] = {
            "ETag": {"description": "Tag of this state", "schema": {"type": "string"}}
        }
        responses["304"] = {"description": "Unchanged since the ETag sent in If-None-Match"}
        responses["226"] = {
            "description": (
                f"With `A-IM: {DELTA_IM}`: only the changes since the ETag sent in If-None-Match "
                "(while the change log covers them)"
            ),
            "headers": {
                "ETag": {"description": "Tag after them", "schema": {"type": "string"}},
                "IM": {"schema": {"const": DELTA_IM}},
            },
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model="KillStateChangesPublic")}}
            },
        }
    for status, model, description in e.alternatives:
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": refs[(model, mode)]}},
        }
    for status in e.statuses:
        responses[str(status)] = {
            "description": DESCRIPTIONS[status],
            "content": {"application/json": {"schema": error_ref}},
        }
    operation: dict[str, Any] = {
        "operationId": e.operation_id,
        "summary": e.summary,
        "tags": list(e.tags),
        "description": f"Needs the {_scope_text(e.permission)}.",
        "responses": responses,
    }
    parameters = [
        *(_parameters(e.path_params, "path") if e.path_params else []),
        *(_parameters(e.query, "query") if e.query else []),
        *(_parameters(e.header_params, "header") if e.header_params else []),
    ]
    if e.conditional:
        parameters += [
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "The ETag of the state the caller has",
                "schema": {"type": "string"},
            },
            {
                "name": "A-IM",
                "in": "header",
                "required": False,
                "description": f"`{DELTA_IM}`: answer 226 with only the changes since then",
                "schema": {"type": "string"},
            },
        ]
    if parameters:
        operation["parameters"] = parameters
    if e.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    return operation


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    result = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _without_nulls(prop),
        }
        if description:
            parameter["description"] = description
        result.append(parameter)
    return result


def _without_nulls(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is simply left out; it cannot be JSON null."""
    options = prop.get("anyOf")
    if options is None:
        return prop
    rest = [o for o in options if o.get("type") != "null"]
    out = {k: v for k, v in prop.items() if k != "anyOf"}
    if out.get("default", ...) is None:
        del out["default"]
    if len(rest) == 1:
        out.update(rest[0])
    else:
        out["anyOf"] = rest
    return out


def _scope_text(permission: str) -> str:
    scopes = ["admin", *PERMISSIONS[permission]]
    return " or ".join(f"`{s}`" for s in scopes) + " scope"


def _stream_operation() -> dict[str, Any]:
    """The OpenAPI operation of the stream (not a JSON endpoint, so written out)."""
    params = []
    properties = StreamQuery.model_json_schema()["properties"]
    for name in ("instance_id", "agent_id", "run_id", "mission_id"):
        schema = next(o for o in properties[name]["anyOf"] if o.get("type") == "string")
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    params.append(
        {
            "name": "include",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["interventions"]},
        }
    )
    params.append(
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": (
                "Resume after this version: the missed changes, then a `resumed` event, while "
                "the change log covers them; else a snapshot"
            ),
            "schema": {"type": "string"},
        }
    )
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    }
    # Before OpenAPI 3.2's itemSchema, the schema of an event stream describes each event as
    # parsed: {event, data, id?, retry?}; the JSON in `data` is described by contentSchema.
    events = [
        _event_schema("snapshot", "KillStatePublic", versioned=True),
        _event_schema("kill", "KillChangePublic", versioned=True),
        _event_schema("revive", "KillChangePublic", versioned=True),
        _event_schema("resumed", "Resumed", versioned=True),
        _event_schema("intervention", "InterventionPublic", versioned=False),
    ]
    return {
        "operationId": "stream",
        "summary": "Stream kill-state changes (Server-Sent Events)",
        "tags": ["kill-switch"],
        "description": (
            "Needs the operator, agent or read scope (or admin). Events: `snapshot` "
            "(id = version; data = the kill state), then `kill` / `revive` (id = version; data = "
            "`{version, kind, kill_switch}`), and with `include=interventions` also "
            "`intervention`. A request with `Last-Event-ID` gets, instead of the snapshot, the "
            "changes after that version and then `resumed` (id = version; data = "
            "`{organization_id, version}`) while the change log covers them. gzip when "
            "`Accept-Encoding` takes it, flushed event by event. Keep-alive comments every "
            "`X-AgentGuard-Keepalive` seconds. "
            "The stream ends when its credential does (key revoked, console session signed "
            "out or expired, session token expired)."
        ),
        "parameters": params,
        "responses": {
            "200": {
                "description": "An endless event stream",
                "headers": {KEEPALIVE_HEADER: {"schema": {"type": "string"}}},
                "content": {"text/event-stream": {"schema": {"oneOf": events}}},
            },
            "401": {"description": "Missing or invalid credentials", **error},
            "403": {"description": "The credential lacks the scope", **error},
            "422": {"description": "A query parameter is invalid", **error},
            "503": {"description": "The server's database is unavailable", **error},
            "429": {
                "description": "Too many open streams for the credential or the organization",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait before trying again",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                },
                **error,
            },
        },
    }


def _event_schema(name: str, model: str, *, versioned: bool) -> dict[str, Any]:
    """One event as parsed from the stream: its name, its JSON data and (if any) its id."""
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{model}"},
        },
        "id": {"type": "string", "pattern": "^[0-9]+$"} if versioned else {"type": "string"},
        "retry": {"type": "integer"},
    }
    required = ["event", "data", "id"] if versioned else ["event", "data"]
    return {"type": "object", "required": required, "properties": properties}
