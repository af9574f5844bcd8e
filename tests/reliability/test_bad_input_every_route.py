"""Bad input on every registered route: a clear 4xx naming the field, and nothing half-written.

``tests/server/api/test_validation.py`` picks cases by hand; this matrix derives them from the
models each route reads (``endpoints.ENDPOINTS`` plus the stream and the console), so a new field
is covered as soon as it is declared, and it fails when the server registers a route without
cases here. Every case checks the status DESIGN.md gives (400 not JSON, 413 over 1 MiB, 422
invalid, 405 wrong method), the error shape, that ``field`` names the offending field (dotted
for nested ones), that ``detail`` starts with it and says what is wrong in words (never a
regex), and that no row of any table changed.

Numbers in a JSON body must be JSON numbers or numeric strings ("7" reads as 7, as pydantic's
lax mode has always done); ``true``/``false`` are not numbers. Unknown query parameters are
ignored; unknown body fields are refused.

One server on SQLite serves every case (validation happens before the store is touched, so
the database adds nothing but time); its tables are seeded so a partial update would show.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from agentguard.server import KillSwitchServer, WebhookSettings
from agentguard.server import schemas as s
from agentguard.server.api.endpoints import ENDPOINTS
from agentguard.server.api.metrics import METRICS_PATH
from agentguard.server.api.openapi import OPENAPI_PATH
from agentguard.server.api.state import STATE_PATH
from agentguard.server.api.stream import STREAM_PATH, StreamQuery
from agentguard.server.auth.session import CSRF_HEADER, SESSION_COOKIE
from agentguard.server.console import ASSET_PATH, PAGE_PATH, SESSION_PATH, SignIn
from agentguard.server.inputs import MAX_BODY_SIZE
from agentguard.server.store.tables import metadata, open_streams
from support.api import bearer

API = "/api/v1"
WHEN = "2026-04-18T17:00:00Z"
# A time-limited kill's expiry: a day after the run starts (within the 366 days allowed).
EXPIRES = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
ERROR_KEYS = {"error", "detail", "field", "required_scope", "kill_switch"}


def intervention(n: int) -> dict[str, Any]:
    """A valid intervention, unique by ``n``, with every field set."""
    return {
        "id": f"iv-matrix-{n}",
        "type": "HARD_BLOCK",
        "action": "send_email",
        "target_type": "agent",
        "target_id": "matrix-bot",
        "kill_switch_id": "ks-1",
        "killed_by": "usr_abc",
        "reason": "matrix",
        "agent_id": "matrix-bot",
        "run_id": "run-1",
        "mission_id": "mission-1",
        "instance_id": "seed-instance",
        "tool_call_id": "call-1",
        "model": "gpt-5-2025-08-07",
        "occurred_at": WHEN,
        "ran_for_ms": 1234.5,
    }


def ledger_entry(n: int) -> dict[str, Any]:
    """A valid AgentSentinel ledger entry, unique by ``n``, with every field set."""
    return {
        "id": f"entry-matrix-{n}",
        "timestamp": WHEN,
        "action": "send_email",
        "cost_usd": 0.25,
        "duration_ms": 12.5,
        "outcome": "success",
        "tags": ["email", "matrix"],
        "payload": {"inputs": {"args": ["a@example.com"], "kwargs": {}}, "outputs": "sent"},
        "compliance_metadata": {"requires_human_approval": False},
        "agent_id": "matrix-bot",
        "run_id": "run-1",
        "task_id": "task-1",
        "mission_id": "mission-1",
        "inputs_redacted": True,
        "impact": "medium",
    }


# A valid value of every model a route reads, with every field set. Mutations of these are the
# cases; each targets existing or new rows so that a validation miss would show as a write.
EXAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    # expires_at and duration together pass the model (the handler refuses the pair, naming
    # duration): each case breaks one of them, which the model refuses first, naming it.
    s.KillRequest: {
        "target_type": "run",
        "target_id": "matrix-run",
        "reason": "matrix",
        "expires_at": EXPIRES,
        "duration": "1h",
        "until": "run_end",
    },
    s.KillQuery: {"wait": 0},
    s.ReviveRequest: {"target_type": "agent", "target_id": "seed-bot", "reason": "fixed"},
    s.ReviveRequestQuery: {"skip": 0, "limit": 10, "status": "all"},
    s.ReviveRequestPath: {"request_id": "00000000-0000-4000-8000-000000000000"},
    s.ReviveDecision: {"reason": "checked"},
    s.CheckQuery: {"target_type": "agent", "target_id": "seed-bot"},
    s.PageQuery: {"skip": 0, "limit": 10},
    s.ApiKeyCreate: {
        "scopes": ["read", "agent"],
        "owner": "usr_matrix",
        "name": "matrix",
        "agents": ["matrix-*"],
    },
    s.KeyPath: {"key_id": "ag_matrix"},
    s.AuditQuery: {
        "skip": 0,
        "limit": 10,
        "action": "kill",
        "target_type": "agent",
        "target_id": "seed-bot",
        "since": WHEN,
    },
    s.InterventionsBatch: {"interventions": [intervention(n) for n in range(5)], "dropped": 1},
    s.InterventionQuery: {
        "skip": 0,
        "limit": 10,
        "target_type": "agent",
        "target_id": "x",
        "type": "HARD_BLOCK",
        "action": "send_email",
        "since": WHEN,
    },
    s.InterventionCountsQuery: {
        "skip": 0,
        "limit": 10,
        "target_type": "agent",
        "type": "OBSERVED",
        "since": WHEN,
    },
    s.HeartbeatIn: {
        "instance_id": "seed-instance",
        "agent_id": "seed-agent",
        "run_id": "run-1",
        "mission_id": "mission-1",
        "interval": 10,
        "executed": 50,
        "refused": 5,
        "failed": 1,
        "cancelled": 2,
        "cost_usd": 9.5,
        "version": 1,
        "checkpoint": "seed",
        "status": "running",
        "error": "boom",
        "labels": {"env": "prod"},
    },
    s.AckIn: {
        "instance_id": "seed-instance",
        "version": 1,
        "agent_id": "seed-agent",
        "run_id": "run-1",
        "mission_id": "mission-1",
    },
    s.AckBatchIn: {
        "acks": [
            {"instance_id": "seed-instance", "version": 1, "agent_id": "seed-agent"},
            {"instance_id": "seed-instance-2", "version": 1, "run_id": "run-1"},
        ]
    },
    s.AcksQuery: {"target_type": "agent", "target_id": "seed-bot"},
    s.AgentPath: {"agent_id": "seed-agent"},
    s.RunPath: {"run_id": "seed-run"},
    s.SeriesQuery: {"window": "6h", "step": "10m"},
    s.CheckpointPath: {"key": "seed"},
    s.CheckpointIn: {"state": {"step": 3}},
    s.WebhookCreate: {
        "url": "https://hooks.example.com/matrix",
        "events": ["kill", "revive", "fail_closed"],
        "format": "pagerduty",
        "name": "matrix",
        "routing_key": "R0matrix",
    },
    s.WebhookPath: {"webhook_id": "wh_matrix"},
    s.WebhookDeliveryQuery: {"skip": 0, "limit": 10, "status": "pending", "event_id": "msg_1"},
    s.DrillRequest: {"target_type": "agent", "target_id": "matrix-bot", "timeout": 0.05},
    s.DrillQuery: {"skip": 0, "limit": 10, "target_type": "agent", "target_id": "seed-agent"},
    s.DrillPath: {"drill_id": "0b3c2f1e-0000-4000-8000-000000000000"},
    s.DrillAckIn: {
        "instance_id": "seed-instance",
        "agent_id": "seed-agent",
        "run_id": "run-1",
        "mission_id": "mission-1",
    },
    StreamQuery: {
        "instance_id": "i",
        "agent_id": "a",
        "run_id": "r",
        "mission_id": "m",
        "include": "interventions",
        "drills": "1",
    },
    SignIn: {"api_key": "ag_matrix_nope"},
    s.SentinelInterventionIn: {
        "intervention_type": "budget_exceeded",
        "outcome": "blocked",
        "action_name": "send_email",
        "action_description": "Send one email",
        "agent_id": "matrix-bot",
        "run_id": "run-1",
        "task_id": "task-1",
        "mission_id": "mission-1",
        "policy_name": "run-budget",
        "estimated_cost": 2.5,
        "actual_cost": 0,
        "risk_level": "high",
        "blast_radius": {"funds_protected": 2.5},
        "reason": "Run budget exceeded",
        "agent_intent": "email the customers",
        "original_inputs": {"args": [1], "kwargs": {}},
        "modified_inputs": None,
        "context": {},
        "remediation_payload": {"reason_code": "BUDGET_EXCEEDED"},
        "timestamp": WHEN,
    },
    s.SentinelIngestIn: {
        "run_id": "run-1",
        "entries": [ledger_entry(n) for n in range(3)],
        "agent_id": "matrix-bot",
        "mission_id": "mission-1",
    },
    # Headers by name (as sent), not by field.
    s.SentinelHeaders: {"X-Sentinel-Agent-Id": "matrix-bot", "X-Sentinel-Run-Id": "run-1"},
}

# Text that breaks some pattern: each string field with a pattern gets every one its pattern
# refuses. ("/" cannot reach a path parameter: it is left out there.)
BAD_TEXT = {
    "a NUL": "a\x00b",
    "blank": "   ",
    "a tab only": "\t",
    "a leading dot": ".hidden",
    "dot-dot": "..",
    "a space": "a b",
    "a punctuation mark": "a!b",
    "a non-ASCII letter": "é",
    "a slash": "a/b",
    "a zero-width space": "email\u200b-campaign",
    "a right-to-left override": "email-campaign\u202e",
    "a tag character": "email\U000e0041",
    "a variation selector": "email\ufe0f",
}
# Ids (the fields refusing invisible characters) also refuse look-alike letters of another script.
LOOK_ALIKE = "\u0435mail-campaign"  # a Cyrillic "е", then Latin letters


@dataclass(frozen=True)
class Spec:
    """What one route reads."""

    method: str
    route: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None


SPECS = [
    Spec(e.method, e.path, e.body, e.query, e.path_params, e.header_params) for e in ENDPOINTS
] + [
    Spec("GET", STREAM_PATH, query=StreamQuery),
    Spec("POST", SESSION_PATH, body=SignIn),
]
BODIES = {spec.body for spec in SPECS if spec.body}


@dataclass(frozen=True)
class Case:
    """One bad request and the answer it must get."""

    method: str
    route: str
    label: str
    status: int
    error: str | None
    field: str | None = None
    words: str | None = None  # must appear in ``detail``
    path: str | None = None  # the concrete path (decoded), if not the route itself
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # sent as UTF-8 bytes
    body: bytes = b""
    content_type: str | None = "application/json"
    content_length: str | None = None  # sent instead of the body's length
    chunked: bool = False  # sent in 64 KiB chunks without a Content-Length
    auth: str = "key"  # key | none | cookie without csrf | cookie with wrong csrf | forged cookie

    @property
    def id(self) -> str:
        return f"{self.method} {self.route.removeprefix(API)} {self.label}"


# -- deriving cases from the models --------------------------------------------------------------

Mutation = tuple[str, Any, str, str | None]  # what, the broken value, the field, words in detail


def dotted(*parts: object) -> str:
    return ".".join(str(p) for p in parts if p != "")


# The JSON Schema keywords this file knows how to break (or that need no breaking). Any other
# keyword fails the derivation, so a new kind of constraint cannot go silently unchecked.
KNOWN_KEYWORDS = {
    "type",
    "patternProperties",
    "maxProperties",
    "format",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "additionalProperties",
    "title",
    "description",
    "default",
}


def unwrap(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A property's schema without ``X | None`` and ``$ref``, and whether null is allowed."""
    nullable = False
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        assert len(options) == 1, f"a union this file cannot break: {prop}"
        prop = {**options[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    if "$ref" in prop:
        prop = defs[prop["$ref"].rsplit("/", 1)[1]]
    unknown = set(prop) - KNOWN_KEYWORDS
    assert not unknown, f"no bad values for {sorted(unknown)} in {prop}: teach this file"
    return prop, nullable


def beyond(bound: float | int, step: int) -> float | int:
    """Just past a bound (``step`` -1 below, +1 above)."""
    return bound + step if abs(bound) < 2**52 else bound * 2


def bounds(prop: dict[str, Any]) -> Iterator[tuple[str, float | int]]:
    if "minimum" in prop:
        yield "below its minimum", beyond(prop["minimum"], -1)
    if "exclusiveMinimum" in prop:
        yield "at its exclusive minimum", prop["exclusiveMinimum"]
    if "maximum" in prop:
        yield "above its maximum", beyond(prop["maximum"], +1)
    if "exclusiveMaximum" in prop:
        yield "at its exclusive maximum", prop["exclusiveMaximum"]


def texts(prop: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Strings too long, too short, or refused by the pattern."""
    if "maxLength" in prop:
        yield "too long", "x" * (prop["maxLength"] + 1)
    if prop.get("minLength", 0) > 0:
        yield "too short", "x" * (prop["minLength"] - 1)
    if "pattern" in prop:
        pattern = re.compile(prop["pattern"])
        for what, text in BAD_TEXT.items():
            if not pattern.search(text):
                yield f"with {what}", text
        if not pattern.search(BAD_TEXT["a zero-width space"]):
            yield "with a Cyrillic look-alike letter", LOOK_ALIKE


def body_mutations(
    prop: dict[str, Any], defs: dict[str, Any], value: Any, field: str
) -> Iterator[Mutation]:
    """Every way to break one JSON value of a body (recursing into objects and arrays)."""
    prop, nullable = unwrap(prop, defs)
    if not {"type", "enum", "const", "properties"} & set(prop):  # Any: every JSON value is fine
        return
    kind = prop.get("type")
    if "properties" in prop:
        yield f"{field} not an object", "text", field, "must be a JSON object"
        yield from object_mutations(prop, defs, value, field)
    elif "enum" in prop or "const" in prop:
        yield f"{field} not one of the choices", "bogus", field, None
        yield f"{field} a number", 12, field, None
    elif kind == "string" and prop.get("format") == "date-time":
        yield f"{field} not a date-time", "yesterday", field, "RFC 3339"
        yield f"{field} seconds since 1970", 1776531600, field, "RFC 3339"
        yield f"{field} an impossible date", "2026-13-45T00:00:00Z", field, None
    elif kind == "string":
        yield f"{field} a number", 12, field, "string"
        yield f"{field} a list", ["x"], field, "string"
        yield f"{field} an object", {"x": "y"}, field, "string"
        for what, text in texts(prop):
            yield f"{field} {what}", text, field, None
    elif kind in ("integer", "number"):
        yield f"{field} a word", "abc", field, None
        yield f"{field} true", True, field, "not true or false"
        yield f"{field} false", False, field, "not true or false"
        yield f"{field} a list", [1], field, None
        yield f"{field} NaN", float("nan"), field, "finite"
        yield f"{field} Infinity", float("inf"), field, "finite"
        yield f"{field} -Infinity", float("-inf"), field, "finite"
        if kind == "integer":
            yield f"{field} a fraction", 1.5, field, None
        for what, number in bounds(prop):
            yield f"{field} {what}", number, field, None
    elif kind == "array":
        yield f"{field} an object", {"x": 1}, field, None
        yield f"{field} a string", "x", field, None
        if "maxItems" in prop:
            many = (value * (prop["maxItems"] + 1))[: prop["maxItems"] + 1]
            yield f"{field} too many items", many, field, None
        if prop.get("minItems", 0) > 0:
            yield f"{field} empty", [], field, None
        k = len(value) // 2  # a bad item between good ones
        for what, bad, where, words in body_mutations(
            prop["items"], defs, value[k], dotted(field, k)
        ):
            yield what, [*value[:k], bad, *value[k + 1 :]], where, words
    elif kind == "boolean":
        yield f"{field} a word", "abc", field, None
    elif kind == "object" and "patternProperties" in prop:  # a map of names to text
        yield f"{field} a list", ["x"], field, None
        yield f"{field} a string", "x", field, None
        yield f"{field} a number as a value", {"k": 1}, f"{field}.k", None
        yield f"{field} a refused value", {"k": "bad value!"}, f"{field}.k", None
        yield f"{field} a refused key", {"bad key!": "x"}, f"{field}.bad key!.[key]", None
        if "maxProperties" in prop:
            many = {f"k{i}": "v" for i in range(prop["maxProperties"] + 1)}
            yield f"{field} too many entries", many, field, None
    else:
        raise AssertionError(f"{field}: no bad values for a schema of {prop}")
    if not nullable:
        yield f"{field} null", None, field, None


def object_mutations(
    schema: dict[str, Any], defs: dict[str, Any], value: dict[str, Any], path: str
) -> Iterator[Mutation]:
    """A required field left out, each field broken, and an unknown field added."""
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        field = dotted(path, name)
        if name in required:
            yield (
                f"{field} missing",
                {k: v for k, v in value.items() if k != name},
                field,
                "required",
            )
        for what, bad, where, words in body_mutations(prop, defs, value.get(name), field):
            yield what, {**value, name: bad}, where, words
    if schema.get("additionalProperties") is False:
        field = dotted(path, "unexpected")
        yield f"{field} unknown", {**value, "unexpected": 1}, field, "unknown field"


def param_mutations(
    model: type[BaseModel], example: dict[str, str]
) -> Iterator[tuple[str, dict[str, str], str, str | None]]:
    """Every way to break a query string or path parameter: all of them arrive as text."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    for name, raw in schema["properties"].items():
        prop, _ = unwrap(raw, schema.get("$defs", {}))
        kind = prop.get("type")
        bad: list[tuple[str, str, str | None]] = []
        if "enum" in prop or "const" in prop:
            bad.append(("not one of the choices", "bogus", None))
        elif kind == "string" and prop.get("format") == "date-time":
            bad += [
                ("not a date-time", "yesterday", "RFC 3339"),
                ("seconds since 1970", "1776531600", "RFC 3339"),
                ("an impossible date", "2026-13-45T00:00:00Z", None),
            ]
        elif kind == "string":
            bad += [(what, text, None) for what, text in texts(prop)]
        elif kind in ("integer", "number"):
            bad += [("a word", "abc", None), ("true", "true", None), ("empty", "", None)]
            bad += [(what, str(n), None) for what, n in bounds(prop)]
            if kind == "integer":
                bad += [("a fraction", "1.5", None), ("5000 digits", "9" * 5000, None)]
            else:
                bad += [("NaN", "nan", "finite"), ("infinite", "inf", "finite")]
        elif kind == "boolean":
            bad.append(("a word", "abc", None))
        else:
            raise AssertionError(f"{model.__name__}.{name}: no bad values for {prop}")
        if name in required:
            rest = {k: v for k, v in example.items() if k != name}
            yield f"{name} missing", rest, name, "required"
        for what, text, words in bad:
            yield f"{name} {what}", {**example, name: text}, name, words


def as_text(example: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in example.items()}


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def spec_cases(spec: Spec) -> Iterator[Case]:
    """The cases of one route, derived from the models it reads."""
    path_example = as_text(EXAMPLES.get(spec.path, {})) if spec.path else {}
    concrete = spec.route.format(**path_example)
    body = encode(EXAMPLES[spec.body]) if spec.body in EXAMPLES else b""
    query = as_text(EXAMPLES.get(spec.query, {})) if spec.query else {}
    headers = as_text(EXAMPLES.get(spec.headers, {})) if spec.headers else {}
    base = Case(
        spec.method,
        spec.route,
        "",
        422,
        "validation_error",
        path=concrete,
        query=tuple(query.items()),
        headers=tuple(headers.items()),
        body=body,
    )
    if spec.body is not None:
        yield from body_cases(spec.body, base)
    if spec.query is not None and spec.query in EXAMPLES:
        for what, params, field, words in param_mutations(spec.query, query):
            yield replace(
                base, label=f"query.{what}", query=tuple(params.items()), field=field, words=words
            )
    if spec.headers is not None and spec.headers in EXAMPLES:
        for what, params, field, words in param_mutations(spec.headers, headers):
            yield replace(
                base,
                label=f"header {what}",
                headers=tuple(params.items()),
                field=field,
                words=words,
            )
        for name, value in headers.items():  # two values: which one would a proxy read?
            yield replace(
                base,
                label=f"header {name} twice",
                headers=(*base.headers, (name, value)),
                field=name,
                words="more than once",
            )
    if spec.path is not None and spec.path in EXAMPLES:
        for what, params, field, words in param_mutations(spec.path, path_example):
            if not params.get(field) or "/" in params[field]:
                continue  # another route, or none: not this one's input
            yield replace(
                base,
                label=f"path.{what}",
                path=spec.route.format(**params),
                field=field,
                words=words,
            )


def body_cases(model: type[BaseModel], base: Case) -> Iterator[Case]:
    """Bodies that are not JSON, not an object, too large, or break a field."""
    valid = base.body or b'{"x": 1}'
    malformed = {
        "truncated": valid[: len(valid) // 2],
        "with a trailing comma": valid[:-1] + b",}",
        "not UTF-8": b'{"\xff\xfe": 1}',
        "empty": b"",
        "blank": b" \n ",
        "a bare word": b"kill",
    }
    for what, raw in malformed.items():
        yield replace(base, label=f"body {what}", status=400, error="malformed_json", body=raw)
    yield replace(
        base,
        label="body with Content-Length not a number",
        status=400,
        error="malformed_json",
        content_length="many",
    )
    for what, raw in {
        "a list": b"[]",
        "a string": b'"x"',
        "a number": b"42",
        "null": b"null",
        "true": b"true",
    }.items():
        yield replace(
            base, label=f"body {what}", field="body", words="must be a JSON object", body=raw
        )
    # Anything but application/json is refused before the body is read: a cross-site form can
    # send text/plain, never JSON.
    for what, content_type in {
        "as text/plain": "text/plain",
        "as a form": "application/x-www-form-urlencoded",
        "as multipart": "multipart/form-data; boundary=x",
        "as application/jsonp": "application/jsonp",
        "without a content type": None,
    }.items():
        yield replace(
            base,
            label=f"JSON body {what}",
            status=415,
            error="unsupported_media_type",
            words="Content-Type must be application/json",
            body=valid,
            content_type=content_type,
        )
    yield from duplicate_cases(model, base, valid)
    huge = b'{"x": "' + b"a" * MAX_BODY_SIZE + b'"}'
    yield replace(base, label="body over 1 MiB", status=413, error="payload_too_large", body=huge)
    yield replace(
        base,
        label="body over 1 MiB streamed without a length",
        status=413,
        error="payload_too_large",
        body=huge * 2,
        chunked=True,
    )
    if model not in EXAMPLES:
        return
    schema = model.model_json_schema()
    for what, bad, field, words in object_mutations(
        schema, schema.get("$defs", {}), EXAMPLES[model], ""
    ):
        body = json.dumps(bad).encode()  # NaN and Infinity as JavaScript writes them
        yield replace(base, label=f"body.{what}", field=field, words=words, body=body)


def duplicate_cases(model: type[BaseModel], base: Case, valid: bytes) -> Iterator[Case]:
    """Each top-level key of the example sent twice with its valid value (a parser keeping
    either would accept it), and one key repeated inside a nested object."""
    example = EXAMPLES.get(model)
    if not example:
        return
    for name, value in example.items():
        rest = json.dumps({k: v for k, v in example.items() if k != name})[1:-1]
        twice = f'{{"{name}": {json.dumps(value)}, {rest}{", " if rest else ""}'
        twice += f'"{name}": {json.dumps(value)}}}'
        yield replace(
            base,
            label=f"body.{name} twice",
            status=400,
            error="malformed_json",
            field=name,
            words="more than once",
            body=twice.encode(),
        )
    lists = [(k, v) for k, v in example.items() if isinstance(v, list) and v]
    nested = next(((k, v) for k, v in lists if isinstance(v[0], dict)), None)
    if nested is not None:
        name, items = nested
        inner = next(iter(items[0]))
        first = json.dumps(items[0])[:-1] + f', "{inner}": {json.dumps(items[0][inner])}}}'
        body = json.dumps({**example, name: ["FIRST", *items[1:]]}).replace('"FIRST"', first)
        yield replace(
            base,
            label=f"body.{name}.0.{inner} twice",
            status=400,
            error="malformed_json",
            field=f"{name}.0.{inner}",
            words="more than once",
            body=body.encode(),
        )


def route_cases() -> Iterator[Case]:
    for spec in SPECS:
        yield from spec_cases(spec)


def hand_cases() -> Iterator[Case]:
    """What no model describes: checkpoint states, console sign-in, sessions, assets, no input."""
    put = Case(
        "PUT",
        f"{API}/checkpoints/{{key}}",
        "",
        422,
        "validation_error",
        path=f"{API}/checkpoints/seed",
        field="state",
    )
    yield replace(put, label="body.state NaN", body=b'{"state": {"x": NaN}}')
    yield replace(
        put,
        label="body.state over 256 KiB",
        words="262,144",
        body=encode({"state": "s" * (256 * 1024)}),
    )
    yield replace(
        put,
        label="body.state nested 5000 deep",
        status=400,
        error="malformed_json",
        field=None,
        body=b'{"state": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    )

    # What the URL pattern cannot say (the host must be public; no credentials in a URL), and
    # the routing key that goes with the pagerduty format only.
    webhook = {"url": "https://hooks.example.com/matrix", "events": ["kill"]}
    register = Case("POST", f"{API}/webhooks", "", 422, "validation_error", field="url")
    for what, url, words in [
        ("a private address", "http://10.0.0.1/hook", "not a public address"),
        ("the metadata service", "http://169.254.169.254/latest", "not a public address"),
        ("loopback as a number", "http://2130706433/", "not a public address"),
        ("localhost", "http://localhost:8000/", "this machine"),
        ("credentials", "https://user:pw@hooks.example.com/", "user name or password"),
        ("a port out of range", "https://hooks.example.com:70000/", "not a valid URL"),
        ("a fragment", "https://hooks.example.com/x#y", "fragment"),
    ]:
        yield replace(
            register, label=f"body.url {what}", words=words, body=encode({**webhook, "url": url})
        )
    for what, extra, words in [
        ("pagerduty without a routing key", {"format": "pagerduty"}, "required"),
        ("a routing key for slack", {"format": "slack", "routing_key": "R0"}, "only a pagerduty"),
        ("a routing key for standard", {"routing_key": "R0"}, "only a pagerduty"),
    ]:
        yield replace(
            register,
            label=f"body.routing_key {what}",
            field="routing_key",
            words=words,
            body=encode({**webhook, **extra}),
        )

    sign_in = Case(
        "POST",
        SESSION_PATH,
        "",
        415,
        "unsupported_media_type",
        body=b"api_key=ag_x",
        words="application/json",
        auth="none",
    )
    yield replace(sign_in, label="a form", content_type="application/x-www-form-urlencoded")
    yield replace(sign_in, label="multipart", content_type="multipart/form-data; boundary=x")
    yield replace(
        sign_in,
        label="JSON as text/plain",
        content_type="text/plain",
        body=encode(EXAMPLES[SignIn]),
    )
    yield replace(sign_in, label="without a content type", content_type=None)
    yield replace(
        sign_in,
        label="body.api_key blank",
        status=422,
        error="validation_error",
        field="api_key",
        words=None,
        body=b'{"api_key": "   "}',
    )

    sign_out = Case("DELETE", SESSION_PATH, "", 403, "forbidden", words=CSRF_HEADER)
    yield replace(sign_out, label="cookie without its CSRF token", auth="cookie without csrf")
    yield replace(sign_out, label="cookie with a wrong CSRF token", auth="cookie with wrong csrf")
    yield Case(
        "POST",
        f"{API}/kill-switch/kill",
        "session cookie without its CSRF token",
        403,
        "forbidden",
        body=encode(EXAMPLES[s.KillRequest]),
        words=CSRF_HEADER,
        auth="cookie without csrf",
    )
    yield Case("GET", SESSION_PATH, "forged cookie", 401, "unauthorized", auth="forged cookie")

    asset = Case("GET", ASSET_PATH, "", 404, "not_found", content_type=None)
    for what, name in {
        "unknown": "console.py",
        "too long": "x" * 300,
        "dot-dot": "..",
        "a NUL": "console.js\x00",
    }.items():
        yield replace(asset, label=f"path.name {what}", path=f"/kill-switch/static/{name}")

    # Routes that read nothing: junk in the query and the body is ignored, not a 500.
    junk = (("limit", "abc"), ("target_id", "\x00"), ("since", "yesterday"), ("x" * 300, ""))
    for method, route, status in [
        ("GET", STATE_PATH, 200),
        ("GET", OPENAPI_PATH, 200),
        ("GET", METRICS_PATH, 200),
        ("GET", "/", 307),
        ("GET", PAGE_PATH, 200),
        ("GET", SESSION_PATH, 200),
        ("DELETE", SESSION_PATH, 204),
    ]:
        yield Case(
            method,
            route,
            "junk query and body ignored",
            status,
            None,
            query=junk,
            body=b"\xff{not json",
        )


def method_cases(routes: list[Route]) -> Iterator[Case]:
    """Every method a path does not take: 405 in the error shape."""
    for route in routes:
        allowed = route.methods or set()
        for method in METHODS:
            if method not in allowed:
                path = route.path.replace("{", "").replace("}", "")  # any value will do
                yield Case(
                    method, route.path, "method not allowed", 405, "method_not_allowed", path=path
                )


def registered_routes() -> list[Route]:
    """Every route a server registers (API, stream, OpenAPI, console)."""
    server = KillSwitchServer()  # not started: only its routes are read
    try:
        routes = list(server.starlette.routes)
    finally:
        server.close()
    assert all(isinstance(r, Route) for r in routes), routes
    return routes  # type: ignore[return-value]


ROUTES = registered_routes()
CASES = [*route_cases(), *hand_cases(), *method_cases(ROUTES)]


# -- the server, and requests straight through ASGI ----------------------------------------------


@dataclass
class Answer:
    """A response: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


async def call(server: KillSwitchServer, case: Case, headers: list[tuple[bytes, bytes]]) -> Answer:
    """Send one request through the ASGI app; then a disconnect, so a stream would end too."""
    path = case.path or case.route
    chunks = [case.body]
    head = list(headers) + [(k.lower().encode(), v.encode()) for k, v in case.headers]
    if case.content_type is not None:
        head.append((b"content-type", case.content_type.encode()))
    if case.chunked:
        chunks = [case.body[i : i + 65536] for i in range(0, len(case.body), 65536)]
    else:
        length = case.content_length or str(len(case.body))
        head.append((b"content-length", length.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": case.method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path).encode(),
        "root_path": "",
        "query_string": urlencode(case.query).encode(),
        "headers": head,
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    pulled = 0
    started: Message = {}
    body: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> Message:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {
                "type": "http.request",
                "body": chunks[pulled - 1],
                "more_body": pulled < len(chunks),
            }
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        else:
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()
            elif case.route == STREAM_PATH:
                done.set()  # a stream that started: hang up

    await asyncio.wait_for(server.app(scope, receive, send), timeout=10)
    return Answer(
        started["status"],
        {k.decode().lower(): v.decode() for k, v in started.get("headers", [])},
        b"".join(body),
    )


@dataclass
class Bench:
    """The shared server, an admin key, and a console session of that key."""

    server: KillSwitchServer
    token: str
    cookie: str
    csrf: str

    def headers(self, auth: str) -> list[tuple[bytes, bytes]]:
        """The credentials of a case (see ``Case.auth``)."""
        if auth == "key":
            return [(k.lower().encode(), v.encode()) for k, v in bearer(self.token).items()]
        if auth == "none":
            return []
        cookie = self.cookie if auth != "forged cookie" else self.cookie[:-4] + "AAAA"
        headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())]
        if auth == "cookie with wrong csrf":
            headers.append((CSRF_HEADER.lower().encode(), b"not-the-token"))
        return headers

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (but the server's own count of its open streams, which it
        writes in the background while a stream of a case is open)."""
        with self.server.database.read() as conn:
            return {
                t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
                for t in metadata.sorted_tables
                if t is not open_streams
            }


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """A server on SQLite with a row in every table a request can write (its webhook sender
    off, so the queued delivery stays as it is)."""
    path = Path(tmp_path_factory.mktemp("bad-input")) / "agentguard.db"
    server = KillSwitchServer(f"sqlite:///{path}", webhooks=WebhookSettings(send=False))
    server.start()
    token = server.create_key("org_a", owner="usr_abc", scopes=["admin"])
    client = TestClient(server.app, headers=bearer(token))
    hook = {"url": "https://hooks.example.com/seed", "events": ["kill"]}
    seed = [
        client.post(f"{API}/webhooks", json=hook),
        client.post(
            f"{API}/kill-switch/kill", json={"target_type": "agent", "target_id": "seed-bot"}
        ),
        client.post(f"{API}/heartbeats", json={**EXAMPLES[s.HeartbeatIn], "executed": 1}),
        client.post(f"{API}/kill-switch/ack", json=EXAMPLES[s.AckIn]),
        client.post(f"{API}/interventions", json={"interventions": [intervention(99)]}),
        client.put(f"{API}/checkpoints/seed", json={"state": "seed"}),
    ]
    assert all(r.is_success for r in seed), [r.text for r in seed]
    browser = TestClient(server.app)
    signed_in = browser.post(SESSION_PATH, json={"api_key": token})
    assert signed_in.status_code == 200, signed_in.text
    yield Bench(server, token, signed_in.cookies[SESSION_COOKIE], signed_in.json()["csrf_token"])
    server.close()


# -- the matrix ----------------------------------------------------------------------------------

# A regex in a message: an anchored or negated class, a repeated class, a count, pydantic's words.
RAW_REGEX = re.compile(r"\^\[|\[\^|\][*+?{]|\{\d+,\d*\}|\$'|should match pattern")


def assert_readable(detail: str, field: str | None) -> None:
    """``detail`` names the field first and says what is wrong in words."""
    assert detail and "\n" not in detail, detail
    if field is not None:
        assert detail.startswith(f"{field}: "), detail
    assert not RAW_REGEX.search(detail), f"a regex in the message: {detail}"
    for noise in ("Value error,", "[type=", "pydantic"):
        assert noise not in detail, detail


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(bench: Bench, case: Case) -> None:
    before = bench.tables()
    answer = await call(bench.server, case, bench.headers(case.auth))
    assert answer.status == case.status, answer.body[:500]
    if case.error is not None:
        assert answer.headers["content-type"] == "application/json"
        error = json.loads(answer.body)
        assert set(error) <= ERROR_KEYS and error["error"] == case.error, error
        assert error.get("field") == case.field, error
        assert_readable(error["detail"], case.field)
        if case.words is not None:
            assert case.words in error["detail"], error
        if case.status == 405:
            allowed = next(r.methods for r in ROUTES if r.path == case.route)
            assert set(answer.headers["allow"].split(", ")) == allowed
            assert (
                error["detail"]
                == f"{case.method} is not allowed here; use " + (answer.headers["allow"])
            )
        if case.status == 403:
            assert "set-cookie" not in answer.headers  # the session is untouched
    assert bench.tables() == before, f"{case.id} wrote to the database"


def test_every_route_has_cases() -> None:
    """A route the server registers with no case here fails, so none ships unchecked."""
    registered = {(m, r.path) for r in ROUTES for m in r.methods or () if m != "HEAD"}
    covered = {(c.method, c.route) for c in CASES if c.status != 405}
    assert not registered - covered, f"routes without bad-input cases: {registered - covered}"
    assert not covered - registered, f"cases of routes that do not exist: {covered - registered}"


@pytest.mark.parametrize(
    "model",
    sorted(
        {m for spec in SPECS for m in (spec.body, spec.query, spec.path, spec.headers) if m},
        key=repr,
    ),
    ids=lambda m: m.__name__,
)
def test_every_model_has_a_valid_example(model: type[BaseModel]) -> None:
    """The matrix breaks one field of a valid example at a time, so the example must be valid."""
    assert model in EXAMPLES, f"add a valid example of {model.__name__} to EXAMPLES"
    example = EXAMPLES[model]
    model.model_validate(example if model in BODIES else as_text(example))
    names = {info.alias or name for name, info in model.model_fields.items()}
    assert set(example) == names, "set every field, so every field is broken"


def test_a_batch_with_one_bad_item_stores_none_of_the_good_ones(bench: Bench) -> None:
    """The matrix shows the bad batches write nothing; here the same good items, sent alone,
    are all stored, so "nothing" did mean "not the good ones either"."""
    client = TestClient(bench.server.app, headers=bearer(bench.token))
    batch = [{**intervention(n), "id": f"iv-batch-{n}"} for n in range(5)]
    before = bench.tables()
    for k, bad in [(0, {"target_type": "robot"}), (4, {"occurred_at": "soon"}), (2, {"id": ""})]:
        broken = [*batch[:k], {**batch[k], **bad}, *batch[k + 1 :]]
        answer = client.post(f"{API}/interventions", json={"interventions": broken})
        assert answer.status_code == 422 and answer.json()["field"].startswith(
            f"interventions.{k}."
        )
        assert bench.tables() == before
    assert client.post(f"{API}/interventions", json={"interventions": batch}).json() == {
        "received": 5,
        "created": 5,
    }  # the same items, all good: every one is stored


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(7, True), ("7", True), (7.0, True), (True, False), (False, False), ("seven", False)],
)
def test_numbers_in_a_body_are_numbers_or_numeric_strings_never_booleans(
    value: Any, accepted: bool
) -> None:
    """The documented leniency: "7" reads as 7 (as it always has), true is not 1."""
    body = json.dumps({**EXAMPLES[s.HeartbeatIn], "executed": value, "cost_usd": value})
    try:
        s.HeartbeatIn.model_validate_json(body)
    except ValidationError:
        assert not accepted
    else:
        assert accepted
