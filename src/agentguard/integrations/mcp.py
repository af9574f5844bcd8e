"""Refuse MCP ``tools/call`` of a killed agent, run, mission or tool, on the server side.

Usage::

    from mcp.server.mcpserver import MCPServer
    from agentguard.integrations.mcp import AgentGuardMiddleware, install, uninstall

    server = MCPServer("tools")
    install(server, guard=guard)   # or: MCPServer(..., middleware=[AgentGuardMiddleware(guard)])
    uninstall(server)              # removes it again

    # the client says who is calling, in the request's _meta:
    meta = {"agentguard/agent_id": "support-bot", "agentguard/run_id": "run-42"}
    await client.call_tool("send_email", {"to": "a@example.com"}, meta=meta)

``_meta`` keys: ``agentguard/agent_id``, ``agentguard/run_id``, ``agentguard/mission_id`` (strings
of at most 256 characters). Ids fixed on the middleware win, then the request's ``_meta``, then
``agentguard.scope``/the guard's defaults; the tool runs inside ``agentguard.scope`` with the
caller's ids, so guarded code it calls sees them. A refused call gets an ordinary tool result with
``isError: true`` whose text names the kill and its reason; the tool never runs, other tools
keep working, and the HARD_BLOCK span is a child of the SDK's ``tools/call`` server span. A
call whose result has ``isError: true`` (the SDK's answer to a tool that raised) counts as failed.
A kill that comes while a call runs stops it at its next ``await`` (a sync tool: once it checks
``guard.raise_if_killed()``): the client gets the same error result, saying the call was
stopped and after how long (``cancel_in_flight=False``: calls run to their end).

Provisional upstream: this relies on ``Server.middleware`` (``async (ctx, call_next)``), which
mcp 2.x marks provisional — its signature and semantics may change in a 2.x minor release.
This module is the only place that depends on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import Scope, scope_of
from ..targets import MAX_TARGET_ID_LENGTH
from ._gate import Gate, enter, install_once, leave, missing, refusal_text, uninstall_all

try:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
    from mcp.types import CallToolResult, TextContent
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("mcp", "the MCP SDK", "mcp") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "META_AGENT_ID",
    "META_MISSION_ID",
    "META_RUN_ID",
    "AgentGuardMiddleware",
    "install",
    "uninstall",
]

META_AGENT_ID = "agentguard/agent_id"
META_RUN_ID = "agentguard/run_id"
META_MISSION_ID = "agentguard/mission_id"

_EMPTY: Mapping[str, Any] = {}


class AgentGuardMiddleware:
    """MCP server middleware: refuses ``tools/call`` while any of the call's targets is killed."""

    def __init__(
        self, guard: Guard | None = None, *, cancel_in_flight: bool = True, **ids: Unpack[Ids]
    ) -> None:
        # A refusal is always an error result: the client sees it, the server goes on.
        self._gate = Gate(
            guard,
            on_block="message",
            cancel_in_flight=cancel_in_flight,
            where="AgentGuardMiddleware",
            **ids,
        )

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        params = ctx.params
        if ctx.method != "tools/call" or params is None:
            return await call_next(ctx)
        name = params.get("name")
        if not isinstance(name, str) or not name:
            return await call_next(ctx)  # malformed: the SDK answers with its own error
        meta = ctx.meta or _EMPTY
        try:
            token = enter(Scope(*(_meta_id(meta, key) for key in _META_KEYS)))
        except InvalidInputError as error:
            return _error_result(f"Error: {error}")
        try:
            return await self._gate.arun(
                name,
                lambda: call_next(ctx),
                tool_call_id=None if ctx.request_id is None else str(ctx.request_id),
                arguments=params.get("arguments"),
                answer=_refused,
                failed=_is_error,
            )
        finally:
            leave(token)


def install(
    server: Any,
    guard: Guard | None = None,
    *,
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> AgentGuardMiddleware:
    """Add the middleware to an ``MCPServer`` or low-level ``Server`` (once; returns it)."""
    scope_of(ids, "install", validate=False)  # a misspelt keyword, even when installed
    return install_once(
        server.middleware,
        AgentGuardMiddleware,
        lambda: AgentGuardMiddleware(guard, cancel_in_flight=cancel_in_flight, **ids),
    )


def uninstall(server: Any) -> bool:
    """Remove the middleware from the server; return whether it was there."""
    return uninstall_all(server.middleware, AgentGuardMiddleware)


_META_KEYS = (META_AGENT_ID, META_RUN_ID, META_MISSION_ID)


def _meta_id(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TARGET_ID_LENGTH:
        raise InvalidInputError(
            f"_meta.{key}",
            f"must be a non-empty string of at most {MAX_TARGET_ID_LENGTH} characters",
        )
    return value


def _is_error(result: HandlerResult) -> bool:
    # MCPServer hands the middleware its result already serialised (a dict); a low-level
    # Server's handler may return the model
    if isinstance(result, dict):
        return result.get("isError") is True
    return isinstance(result, CallToolResult) and bool(result.is_error)


def _refused(error: PolicyViolationError) -> CallToolResult:
    return _error_result(refusal_text(error))


def _error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
