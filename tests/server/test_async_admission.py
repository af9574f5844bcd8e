"""Strict mode never blocks the event loop: every integration's async path checks off the loop.

A real server answers ``GET /check`` through a loopback proxy that holds each answer back; an
asyncio ticker runs beside the guarded call and must keep ticking while the call waits.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from mcp import Client
from mcp.server.mcpserver import MCPServer

import agentguard
from agentguard import Guard, PolicyViolationError
from agentguard.integrations.asgi import KillSwitchMiddleware
from agentguard.integrations.httpx import AsyncGuardedTransport
from agentguard.integrations.langchain import AgentGuardMiddleware, guard_tool
from agentguard.integrations.mcp import META_AGENT_ID, install
from agentguard.integrations.openai_agents import guard_tools, kill_switch_guardrail
from support.event_loop import beside_a_ticker
from support.live import Live
from support.tcpproxy import TcpProxy

DELAY = 0.3  # each /check answer is held back this long; a guarded call asks at least twice
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def slow_guard(live: Live) -> Iterator[Guard]:
    proxy = TcpProxy(live.process.port)
    proxy.delay = DELAY
    guard = Guard(proxy.url, api_key=live.agent, mode="strict", max_staleness=60)
    yield guard
    guard.close()
    proxy.close()


# -- each integration's async path, as a user reaches it -------------------------------------


async def langchain_tool(guard: Guard) -> Any:

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        return f"found {query}"

    guarded = guard_tool(lookup, guard=guard, agent_id="bot")
    return await guarded.ainvoke({"query": "x"})


async def langchain_middleware(guard: Guard) -> Any:

    class Model(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        return f"found {query}"

    model = Model(
        responses=[
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1"}]),
            AIMessage("done"),
        ]
    )
    agent = create_agent(
        model, [lookup], name="bot", middleware=[AgentGuardMiddleware(guard=guard)]
    )
    result = await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})
    return [m.content for m in result["messages"] if getattr(m, "type", "") == "tool"][0]


def _scripted_agent(guard: Guard, *, guardrail: bool) -> Any:

    model = ScriptedModel(
        [[function_call("lookup", {"query": "x"}, call_id="c1")], [assistant_message("done")]]
    )
    if guardrail:

        @function_tool(tool_input_guardrails=[kill_switch_guardrail(guard=guard)])
        async def lookup(query: str) -> str:
            """Look something up."""
            return f"found {query}"

        tools = [lookup]
    else:

        @function_tool
        async def lookup(query: str) -> str:
            """Look something up."""
            return f"found {query}"

        tools = guard_tools([lookup], guard=guard)
    return Agent(name="bot", model=model, tools=tools)


async def openai_agents_tool(guard: Guard) -> Any:

    result = await Runner.run(
        _scripted_agent(guard, guardrail=False), "go", run_config=RunConfig(tracing_disabled=True)
    )
    return result.final_output


async def openai_agents_guardrail(guard: Guard) -> Any:

    result = await Runner.run(
        _scripted_agent(guard, guardrail=True), "go", run_config=RunConfig(tracing_disabled=True)
    )
    return result.final_output


async def mcp_middleware(guard: Guard) -> Any:

    server = MCPServer("tools")

    @server.tool()
    def ping() -> str:
        """Answer."""
        return "pong"

    install(server, guard=guard)
    async with Client(server) as client:
        result = await client.call_tool("ping", {}, meta={META_AGENT_ID: "bot"})
    if result.is_error:
        raise AssertionError(result.content)
    return "".join(getattr(c, "text", "") for c in result.content)


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def asgi_gateway(guard: Guard) -> Any:

    app = KillSwitchMiddleware(_hello, guard=guard)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/", headers={"X-Agent-Id": "bot"})
    if response.status_code != 200:
        raise AssertionError(response.text)
    return response.text


async def httpx_transport(guard: Guard) -> Any:

    transport = AsyncGuardedTransport(httpx.ASGITransport(app=_hello), guard=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        with agentguard.scope(agent_id="bot"):
            response = await client.get("/")
    return response.text


async def decorated_coroutine(guard: Guard) -> Any:
    @guard.guarded_action(agent_id="bot")
    async def act() -> str:
        return "acted"

    return await act()


PATHS: dict[str, tuple[Callable[[Guard], Awaitable[Any]], str]] = {
    "langchain tool": (langchain_tool, "found x"),
    "langchain middleware": (langchain_middleware, "found x"),
    "openai agents tool": (openai_agents_tool, "done"),
    "openai agents guardrail": (openai_agents_guardrail, "done"),
    "mcp middleware": (mcp_middleware, "pong"),
    "asgi gateway": (asgi_gateway, "hello"),
    "httpx transport": (httpx_transport, "hello"),
    "decorated coroutine": (decorated_coroutine, "acted"),
}


@SQLITE_ONLY
@pytest.mark.parametrize("path", list(PATHS))
async def test_a_slow_strict_check_does_not_stall_the_event_loop(
    slow_guard: Guard, path: str
) -> None:
    run, expected = PATHS[path]
    result, longest_gap, took = await beside_a_ticker(run(slow_guard))
    assert result == expected
    assert took >= DELAY  # the check really went to the slow server
    # Blocking the loop would stall the ticker for every /check (>= 2 x DELAY).
    assert longest_gap < DELAY, f"the event loop stalled for {longest_gap:.3f} s"


@SQLITE_ONLY
async def test_enforce_async_refuses_a_killed_agent(live: Live, slow_guard: Guard) -> None:
    assert live.kill("bot").status_code == 200
    with pytest.raises(PolicyViolationError, match="'bot' was killed"):
        await slow_guard.enforce_async("lookup", agent_id="bot")
    local = Guard(agent_id="bot")
    local.kill("agent", "bot")
    started = time.monotonic()
    with pytest.raises(PolicyViolationError):
        await local.enforce_async("lookup")  # an in-memory guard checks inline
    assert time.monotonic() - started < 5
