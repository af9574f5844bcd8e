"""MCP: the server-side middleware, driven by the SDK's in-process client."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import mcp.shared._otel
import pytest
from integration_contract import Body, IntegrationContract
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from opentelemetry.trace import SpanKind

from agentguard import Guard, InterventionType, current_scope
from agentguard.integrations.mcp import (
    META_AGENT_ID,
    META_RUN_ID,
    AgentGuardMiddleware,
    install,
    uninstall,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

BOT = {META_AGENT_ID: "billing-bot", META_RUN_ID: "run-9"}


def billing_server() -> tuple[MCPServer, list[str]]:
    """An MCP server with two tools; the list records the refunds that really ran."""
    server = MCPServer("billing")
    refunds: list[str] = []

    @server.tool()
    def refund(order_id: str) -> str:
        """Refund an order."""
        refunds.append(order_id)
        return f"refunded {order_id}"

    @server.tool()
    def balance(account: str) -> int:
        """An account's balance."""
        return 42

    return server, refunds


@asynccontextmanager
async def connected(server: MCPServer) -> AsyncIterator[Client]:
    with anyio.fail_after(20):
        async with Client(server) as client:
            yield client


def text(result: object) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


async def test_killed_agent_gets_an_error_result_other_agents_keep_working(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own SERVER span per message uses the global tracer; point it at ours.
    otel = mcp.shared._otel  # noqa: SLF001 - the SDK offers no public hook for its tracer
    monkeypatch.setattr(otel, "_tracer", spans.provider.get_tracer("mcp-python-sdk"))
    guard = make_guard()
    server, refunds = billing_server()
    install(server, guard=guard)

    async with connected(server) as client:
        allowed = await client.call_tool("refund", {"order_id": "o-1"}, meta=BOT)
        assert not allowed.is_error and text(allowed) == "refunded o-1"

        guard.kill("agent", "billing-bot", reason="refund loop", actor="usr_ops")
        refused = await client.call_tool("refund", {"order_id": "o-2"}, meta=BOT)
        assert refused.is_error
        assert "agent 'billing-bot' was killed by usr_ops" in text(refused)
        assert "refund loop" in text(refused)

        other_agent = {META_AGENT_ID: "ops-bot"}
        other = await client.call_tool("refund", {"order_id": "o-3"}, meta=other_agent)
        assert not other.is_error
    assert refunds == ["o-1", "o-3"]

    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("refund", "billing-bot", "run-9")
    assert block.tool_call_id is not None  # the JSON-RPC request id
    span = spans.one_block("execute_tool refund", "refund")
    (server_span,) = [
        s
        for s in spans.exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER
        and s.name == "tools/call refund"
        and s.context.span_id == span.parent.span_id
    ]
    assert server_span.attributes["error.type"] == "tool_error"  # the SDK saw isError too

    guard.revive("agent", "billing-bot")
    async with connected(server) as client:
        assert not (await client.call_tool("refund", {"order_id": "o-4"}, meta=BOT)).is_error
    assert refunds == ["o-1", "o-3", "o-4"]


async def test_killed_tool_is_refused_while_other_tools_keep_working(
    make_guard: MakeGuard, hard_block
) -> None:
    guard = make_guard()
    server, refunds = billing_server()
    install(server, guard=guard)
    guard.kill("tool", "refund", reason="fraud review")

    async with connected(server) as client:
        refused = await client.call_tool("refund", {"order_id": "o-1"})
        balance = await client.call_tool("balance", {"account": "a"})
        tools = await client.list_tools()
    assert refused.is_error and "fraud review" in text(refused)
    assert not balance.is_error and balance.structured_content == {"result": 42}
    assert {t.name for t in tools.tools} == {"refund", "balance"}  # listing is untouched
    assert refunds == [] and hard_block(guard).target_type == "tool"


async def test_install_is_idempotent_and_uninstall_reverts(make_guard: MakeGuard) -> None:
    guard = make_guard()
    server, refunds = billing_server()
    before = list(server.middleware)
    middleware = install(server, guard=guard)
    assert install(server, guard=guard) is middleware
    assert server.middleware == [*before, middleware]

    guard.kill("tool", "refund")
    assert uninstall(server) is True and server.middleware == before
    assert uninstall(server) is False
    async with connected(server) as client:
        assert not (await client.call_tool("refund", {"order_id": "o-1"})).is_error
    assert refunds == ["o-1"]


async def test_middleware_in_the_constructor_and_bad_meta(make_guard: MakeGuard) -> None:
    guard = make_guard()
    server = MCPServer("tools", middleware=[AgentGuardMiddleware(guard)])

    @server.tool()
    def ping() -> str:
        """Ping."""
        return "pong"

    async with connected(server) as client:
        bad = await client.call_tool("ping", {}, meta={META_AGENT_ID: "x" * 300})
        assert bad.is_error and "_meta.agentguard/agent_id" in text(bad)
        assert text(await client.call_tool("ping", {}, meta={META_AGENT_ID: "ok"})) == "pong"
    assert guard.interventions() == []  # bad input is not a HARD_BLOCK


class TestContract(IntegrationContract):
    """The server middleware keeps the integration contract; ids come in the request's _meta."""

    sync_path = False
    on_block = ("message",)  # an error result naming the kill
    found_agent = "caller"
    found_wins = True  # the request's claim wins over the server's agentguard.scope

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        server = MCPServer("contract")

        @server.tool()
        def lookup() -> str:
            """Look something up."""
            return body()

        install(server, guard=guard, **ids)
        return server

    async def call(self, made: Any, *, sync: bool) -> Any:
        async with connected(made) as client:
            return await client.call_tool("lookup", {}, meta={META_AGENT_ID: "caller"})

    def undo(self, made: Any) -> Any:
        assert uninstall(made)
        return made

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, CallToolResult) and " refused: " in text(outcome):
            assert outcome.is_error
            return text(outcome)
        return super().refusal(outcome)


async def test_tools_run_inside_the_callers_scope(make_guard: MakeGuard) -> None:
    server = MCPServer("scoped")

    @server.tool()
    def whoami() -> str:
        """The scope the tool runs in."""
        return repr(tuple(current_scope()))

    install(server, guard=make_guard(), mission_id="q4")
    async with connected(server) as client:
        result = await client.call_tool("whoami", {}, meta=BOT)
        invisible = await client.call_tool("whoami", {}, meta={META_AGENT_ID: "bot\u200b"})
    assert text(result) == repr(("billing-bot", "run-9", None))  # fixed ids are for the check
    assert invisible.is_error and "agent_id" in text(invisible)


# -- a kill while a tool call runs ---------------------------------------------------------------


def crawler_server(started: threading.Event, finished: list[str]) -> MCPServer:
    server = MCPServer("crawler")

    @server.tool()
    async def crawl(site: str) -> str:
        """Crawl a site (30 s)."""
        started.set()
        await anyio.sleep(30)
        finished.append(site)
        return "crawled"

    @server.tool()
    async def index(site: str) -> str:
        """Index a site (0.3 s)."""
        started.set()
        await anyio.sleep(0.3)
        finished.append(site)
        return "indexed"

    return server


def kill_when_started(guard: Guard, started: threading.Event) -> None:
    def kill() -> None:
        assert started.wait(10)
        guard.kill("agent", "billing-bot", reason="crawling the wrong site", actor="usr_ops")

    threading.Thread(target=kill, daemon=True).start()


async def test_a_call_in_flight_is_stopped_with_a_tool_error(make_guard: MakeGuard) -> None:
    guard = make_guard()
    started, finished = threading.Event(), []
    server = crawler_server(started, finished)
    install(server, guard=guard)
    kill_when_started(guard, started)
    begun = time.monotonic()
    async with connected(server) as client:
        result = await client.call_tool("crawl", {"site": "a.example"}, meta=BOT)
        assert time.monotonic() - begun < 10
        assert result.is_error
        assert "'crawl' stopped after" in text(result)
        assert "agent 'billing-bot' was killed by usr_ops" in text(result)
        refused = await client.call_tool("crawl", {"site": "b.example"}, meta=BOT)
        assert refused.is_error and "'crawl' refused" in text(refused)
    assert finished == []
    stopped, blocked = sorted(guard.interventions(), key=lambda iv: iv.occurred_at)
    assert stopped.type is InterventionType.CANCELLED and stopped.run_id == "run-9"
    assert blocked.type is InterventionType.HARD_BLOCK
    counts = guard.counts("agent", "billing-bot")
    assert (counts.executed, counts.cancelled, counts.refused, counts.failed) == (1, 1, 1, 0)


async def test_an_opted_out_server_lets_calls_finish(make_guard: MakeGuard) -> None:
    guard = make_guard()
    started, finished = threading.Event(), []
    server = crawler_server(started, finished)
    install(server, guard=guard, cancel_in_flight=False)
    kill_when_started(guard, started)
    async with connected(server) as client:
        result = await client.call_tool("index", {"site": "a.example"}, meta=BOT)
    assert not result.is_error and text(result) == "indexed"
    assert finished == ["a.example"] and guard.interventions() == []
