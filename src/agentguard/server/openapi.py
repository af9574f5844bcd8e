"""The OpenAPI 3.1 document, generated from the endpoint declarations and pydantic models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .._version import __version__
from .auth.principal import PERMISSIONS
from .problems import DESCRIPTIONS
from .routes import API, ENDPOINTS, VERSION_HEADER, Endpoint
from .schemas import ErrorResponse, InterventionPublic
from .stream import STREAM_MODELS, STREAM_PATH, stream_operation

REF = "#/components/schemas/{model}"
OPENAPI_PATH = f"{API}/openapi.json"


def build_openapi(
    endpoints: Sequence[Endpoint] = ENDPOINTS, *, server_url: str = "/", clerk: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API served under ``server_url``."""
    models: list[type[BaseModel]] = [ErrorResponse, *STREAM_MODELS, InterventionPublic]
    for e in endpoints:
        models.append(e.response)
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
    paths[STREAM_PATH] = {"get": stream_operation()}
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
    responses: dict[str, Any] = {
        "200": {
            "description": e.response.__doc__ or "OK",
            "content": {"application/json": {"schema": response_ref}},
        }
    }
    if e.versioned:
        responses["200"]["headers"] = {
            VERSION_HEADER: {
                "description": "The organization's kill-state version after this change",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if e.conditional:
        responses["200"]["headers"] = {
            "ETag": {"description": "Tag of this state", "schema": {"type": "string"}}
        }
        responses["304"] = {"description": "Unchanged since the ETag sent in If-None-Match"}
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
