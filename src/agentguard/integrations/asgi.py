"""An ASGI gateway: refuse HTTP requests and websockets of a killed agent, run or mission.

Usage::

    from agentguard.integrations.asgi import KillSwitchMiddleware

    app.add_middleware(KillSwitchMiddleware, guard=guard)       # Starlette / FastAPI
    app = KillSwitchMiddleware(app, guard=guard)                # any ASGI app

By default the caller is identified by the ``X-Agent-Id``, ``X-Run-Id`` and ``X-Mission-Id``
headers — claims the caller makes, so where callers are not trusted pass ``identify=lambda
scope: agentguard.Scope(agent_id=...)`` to derive the ids from their credential instead.
Every request is checked as the action ``"gateway"``, so ``guard.kill("tool", "gateway")``
closes the gateway to everyone.

A refused HTTP request gets ``403`` with JSON ``{error, message, target_type, target_id, reason,
killed_by, killed_at, intervention_id}``; a refused websocket is accepted and closed at once
with code 1008 (policy violation). Each refusal is a HARD_BLOCK with one span named
``agentguard.gateway {METHOD} {path}``. Malformed identity headers get ``400`` naming the
header. Allowed requests run inside ``agentguard.scope`` with the caller's ids, so guarded
tools behind the gateway see them; a request whose app raises counts as failed. Lifespan
and other scope types pass straight through.
This module needs no framework: it speaks ASGI directly.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import EMPTY_SCOPE, Scope
from ..targets import MAX_TARGET_ID_LENGTH, id_text_problem
from ._gate import Gate, enter, leave

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["GATEWAY_ACTION", "KillSwitchMiddleware", "identify_from_headers"]

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]

GATEWAY_ACTION = "gateway"
POLICY_VIOLATION = 1008  # websocket close code
_HEADERS = {b"x-agent-id": 0, b"x-run-id": 1, b"x-mission-id": 2}
_HEADER_NAMES = ("X-Agent-Id", "X-Run-Id", "X-Mission-Id")


def identify_from_headers(scope: ASGIScope) -> Scope:
    """The caller's ids from ``X-Agent-Id``, ``X-Run-Id`` and ``X-Mission-Id``."""
    ids: list[str | None] | None = None
    for name, value in scope.get("headers") or ():
        field = _HEADERS.get(name)
        if field is None:
            continue
        if ids is None:
            ids = [None, None, None]
        text = value.decode("latin-1").strip()
        if not text or len(text) > MAX_TARGET_ID_LENGTH:
            raise InvalidInputError(
                _HEADER_NAMES[field],
                f"must be a non-empty id of at most {MAX_TARGET_ID_LENGTH} characters",
            )
        problem = id_text_problem(text)
        if problem is not None:
            raise InvalidInputError(_HEADER_NAMES[field], problem)
        ids[field] = text
    return EMPTY_SCOPE if ids is None else Scope(*ids)


class KillSwitchMiddleware:
    """Pure ASGI middleware refusing traffic of killed agents, runs and missions."""

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard | None = None,
        identify: Callable[[ASGIScope], Scope | None] | None = None,
        *,
        action: str = GATEWAY_ACTION,
    ) -> None:
        self.app = app
        self.identify = identify or identify_from_headers
        self.action = action
        self._gate = Gate(guard)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def __call__(self, scope_: ASGIScope, receive: Receive, send: Send) -> None:
        kind = scope_["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope_, receive, send)
            return
        try:
            # validates the ids a custom ``identify`` returned
            token = enter(self.identify(scope_) or EMPTY_SCOPE)
        except InvalidInputError as error:
            await _reject(kind, receive, send, 400, _invalid_body(error))
            return
        try:
            method = scope_.get("method", "GET") if kind == "http" else "WEBSOCKET"
            try:
                admitted = await self._gate.acheck(
                    self.action, span_name=f"agentguard.gateway {method} {scope_.get('path', '')}"
                )
            except PolicyViolationError as error:
                await _reject(kind, receive, send, 403, _violation_body(error))
                return
            try:
                await self.app(scope_, receive, send)
            except Exception:
                admitted.failed()
                raise
        finally:
            leave(token)


def _invalid_body(error: InvalidInputError) -> dict[str, Any]:
    return {"error": "invalid_request", "field": error.field, "message": str(error)}


def _violation_body(error: PolicyViolationError) -> dict[str, Any]:
    killed_at = error.killed_at
    return {
        "error": "policy_violation",
        "message": str(error),
        "target_type": error.target_type,
        "target_id": error.target_id,
        "reason": error.reason,
        "killed_by": error.killed_by,
        "killed_at": killed_at.isoformat().replace("+00:00", "Z") if killed_at else None,
        "intervention_id": error.intervention_id,
    }


async def _reject(
    kind: str, receive: Receive, send: Send, status: int, body: dict[str, Any]
) -> None:
    if kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        what = body.get("target_type", body.get("field"))
        reason = f"{body['error']}: {what} {body.get('target_id', '')}".strip()
        await send(
            {
                "type": "websocket.close",
                "code": POLICY_VIOLATION,
                "reason": reason.encode("utf-8")[:123].decode("utf-8", "ignore"),
            }
        )
        return
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
