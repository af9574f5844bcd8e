"""Allowed-path overhead of each integration against the same framework call unguarded.

Every guarded call runs under agent, run and mission ids with 1,000 unrelated active kills in
the index, so each check does its full set of look-ups. Plain and guarded samples alternate;
each figure is the best of ``--repeats`` samples of ``calls × --scale`` calls, in the process's
CPU time (the framework calls take milliseconds on a shared machine, where wall-clock samples
also count the time a busy neighbour held the core; the minimum is the least noisy estimate).

    python benchmarks/bench_integrations.py [--repeats 9] [--scale 1.0] [--update]
    python benchmarks/bench_integrations.py --only pydantic_ai,smolagents   # some rows only
    python benchmarks/bench_integrations.py --match "model call"   # rows whose call has the text
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import anthropic  # noqa: E402
import httpx  # noqa: E402
import httpx2  # noqa: E402
import openai  # noqa: E402
from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402
from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.models.base_llm import BaseLlm  # noqa: E402
from google.adk.models.llm_request import LlmRequest  # noqa: E402
from google.adk.models.llm_response import LlmResponse  # noqa: E402
from google.adk.plugins.base_plugin import BasePlugin  # noqa: E402
from google.adk.plugins.plugin_manager import PluginManager  # noqa: E402
from google.adk.runners import InMemoryRunner  # noqa: E402
from google.genai import types  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain.agents.middleware import AgentMiddleware, ModelRequest  # noqa: E402
from langchain.agents.middleware import ModelResponse as LcModelResponse  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import ToolCallBlock  # noqa: E402
from llama_index.core.llms import ChatMessage as LlamaMessage  # noqa: E402
from llama_index.core.llms import MessageRole as LlamaRole  # noqa: E402
from llama_index.core.llms.mock import MockFunctionCallingLLM  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from pydantic_ai import Agent as PydanticAgent  # noqa: E402
from pydantic_ai import FunctionToolset, RunContext  # noqa: E402
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart  # noqa: E402
from pydantic_ai.models.function import FunctionModel  # noqa: E402
from pydantic_ai.toolsets import WrapperToolset  # noqa: E402
from pydantic_ai.usage import RunUsage  # noqa: E402
from smolagents import Tool as SmolTool  # noqa: E402
from smolagents import ToolCallingAgent  # noqa: E402
from smolagents.models import ChatMessage as SmolMessage  # noqa: E402
from smolagents.models import ChatMessageToolCall, ChatMessageToolCallFunction  # noqa: E402
from smolagents.models import MessageRole as SmolRole  # noqa: E402
from smolagents.models import Model as SmolModel  # noqa: E402
from smolagents.monitoring import LogLevel  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from agentguard import Guard, scope  # noqa: E402
from agentguard.integrations import anthropic as ag_anthropic  # noqa: E402
from agentguard.integrations import asgi as ag_asgi  # noqa: E402
from agentguard.integrations import functions as ag_functions  # noqa: E402
from agentguard.integrations import google_adk as ag_adk  # noqa: E402
from agentguard.integrations import httpx as ag_httpx  # noqa: E402
from agentguard.integrations import langchain as ag_langchain  # noqa: E402
from agentguard.integrations import llama_index as ag_llama_index  # noqa: E402
from agentguard.integrations import mcp as ag_mcp  # noqa: E402
from agentguard.integrations import openai as ag_openai_client  # noqa: E402
from agentguard.integrations import openai_agents as ag_openai  # noqa: E402
from agentguard.integrations import pydantic_ai as ag_pydantic_ai  # noqa: E402
from agentguard.integrations import smolagents as ag_smolagents  # noqa: E402

Loop = Callable[[int], None]
Case = tuple[str, str, Loop, Loop, int]
IDS = {"agent_id": "bench-bot", "run_id": "run-1", "mission_id": "mission-1"}


def per_call_ns(loop: Loop, calls: int) -> float:
    """CPU time of the process (every thread: Pydantic AI runs sync tools in one) per call."""
    start = time.process_time_ns()
    loop(calls)
    return (time.process_time_ns() - start) / calls


def compare(plain: Loop, guarded: Loop, calls: int, repeats: int) -> tuple[float, float]:
    """Best per-call ns of each loop, samples interleaved so drift hits both alike."""
    plain(max(1, calls // 10))
    guarded(max(1, calls // 10))  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(per_call_ns(plain, calls))
        b.append(per_call_ns(guarded, calls))
    return min(a), min(b)


def sync_loop(call: Callable[[], Any]) -> Loop:
    def loop(n: int) -> None:
        for _ in range(n):
            call()

    return loop


def async_loop(call: Callable[[], Awaitable[Any]]) -> Loop:
    async def run(n: int) -> None:
        for _ in range(n):
            await call()

    return lambda n: asyncio.run(run(n))


class ToolModel(FakeMessagesListChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def cases(guard: Guard) -> list[Case]:
    """(integration, framework call, plain loop, guarded loop, calls per sample)."""
    out: list[Case] = []

    # functions
    def send_email(to: str) -> str:
        return to

    registry = ag_functions.guard_registry({"send_email": send_email}, guard=guard)
    out.append(
        (
            "functions",
            "registry function call",
            sync_loop(lambda: send_email("a")),
            sync_loop(lambda: registry["send_email"]("a")),
            200_000,
        )
    )

    # LangChain
    @tool
    def lookup(query: str) -> str:
        """Look up."""
        return query

    @tool("lookup")
    async def alookup(query: str) -> str:
        """Look up."""
        return query

    guarded_lookup = ag_langchain.guard_tool(lookup, guard=guard)
    guarded_alookup = ag_langchain.guard_tool(alookup, guard=guard)
    call = {"name": "lookup", "args": {"query": "x"}, "id": "c1", "type": "tool_call"}
    out.append(
        (
            "langchain",
            "tool.invoke(tool_call)",
            sync_loop(lambda: lookup.invoke(call)),
            sync_loop(lambda: guarded_lookup.invoke(call)),
            3_000,
        )
    )
    out.append(
        (
            "langchain",
            "await tool.ainvoke(tool_call), async tool",
            async_loop(lambda: alookup.ainvoke(call)),
            async_loop(lambda: guarded_alookup.ainvoke(call)),
            3_000,
        )
    )

    def agent(middleware: list[Any]) -> Any:
        model = ToolModel(
            responses=[
                AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1"}]),
                AIMessage("done"),
            ]
        )
        return create_agent(model, [lookup], name="bench-bot", middleware=middleware)

    class PassThrough(AgentMiddleware):  # type: ignore[type-arg]
        def wrap_tool_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

    plain_agent = agent([])
    pass_through_agent = agent([PassThrough()])
    guarded_agent = agent([ag_langchain.AgentGuardMiddleware(guard=guard)])
    request = {"messages": [("user", "hi")]}
    out.append(
        (
            "langchain",
            "create_agent run, 1 tool call: AgentGuardMiddleware",
            sync_loop(lambda: plain_agent.invoke(request)),
            sync_loop(lambda: guarded_agent.invoke(request)),
            200,
        )
    )
    out.append(
        (
            "langchain",
            "same, vs. a pass-through middleware",
            sync_loop(lambda: pass_through_agent.invoke(request)),
            sync_loop(lambda: guarded_agent.invoke(request)),
            200,
        )
    )

    # ASGI gateway
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/tools/x", hello)])
    gated = ag_asgi.KillSwitchMiddleware(app, guard=guard)
    headers = [(b"x-agent-id", b"bench-bot"), (b"x-run-id", b"run-1"), (b"host", b"bench")]

    def asgi_call(target: Any) -> Callable[[], Awaitable[None]]:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        async def call() -> None:
            http = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/tools/x",
                "raw_path": b"/tools/x",
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "server": ("bench", 80),
                "client": ("127.0.0.1", 5000),
            }
            await target(http, receive, send)

        return call

    out.append(
        (
            "asgi",
            "Starlette request through ASGI",
            async_loop(asgi_call(app)),
            async_loop(asgi_call(gated)),
            5_000,
        )
    )

    # httpx
    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    plain_client = httpx.Client(transport=httpx.MockTransport(ok))
    guarded_client = httpx.Client(
        transport=ag_httpx.GuardedTransport(httpx.MockTransport(ok), guard=guard)
    )
    out.append(
        (
            "httpx",
            "client.get (MockTransport inside)",
            sync_loop(lambda: plain_client.get("https://example.com/")),
            sync_loop(lambda: guarded_client.get("https://example.com/")),
            3_000,
        )
    )

    # OpenAI Agents SDK
    @function_tool
    def refund(order_id: str) -> str:
        """Refund."""
        return order_id

    guarded_refund = ag_openai.guard_tool(refund, guard=guard)

    class Ctx:
        tool_name, tool_call_id, agent, run_config = "refund", "c1", None, None

    arguments = json.dumps({"order_id": "o-1"})
    out.append(
        (
            "openai_agents",
            "tool.on_invoke_tool(ctx, json)",
            async_loop(lambda: refund.on_invoke_tool(Ctx(), arguments)),  # type: ignore[arg-type]
            async_loop(lambda: guarded_refund.on_invoke_tool(Ctx(), arguments)),  # type: ignore[arg-type]
            5_000,
        )
    )

    config = RunConfig(tracing_disabled=True, group_id="run-1")

    def runner(tools: list[Any]) -> Callable[[], Awaitable[Any]]:
        def run() -> Awaitable[Any]:
            model = ScriptedModel(
                [
                    [function_call("refund", {"order_id": "o-1"}, call_id="c1")],
                    [assistant_message("done")],
                ]
            )
            return Runner.run(
                Agent(name="bench-bot", model=model, tools=tools), "go", run_config=config
            )

        return run

    out.append(
        (
            "openai_agents",
            "Runner.run, 1 tool call",
            async_loop(runner([refund])),
            async_loop(runner([guarded_refund])),
            100,
        )
    )

    # MCP
    def server(guarded: bool) -> MCPServer:
        s = MCPServer("bench", log_level="WARNING")

        @s.tool()
        def add(a: int, b: int) -> int:
            """Add."""
            return a + b

        if guarded:
            ag_mcp.install(s, guard=guard)
        return s

    meta = {ag_mcp.META_AGENT_ID: "bench-bot", ag_mcp.META_RUN_ID: "run-1"}

    def mcp_loop(s: MCPServer) -> Loop:
        async def run(n: int) -> None:
            async with Client(s) as client:
                for _ in range(n):
                    await client.call_tool("add", {"a": 1, "b": 2}, meta=meta)

        return lambda n: asyncio.run(run(n))

    out.append(
        ("mcp", "in-process client.call_tool", mcp_loop(server(False)), mcp_loop(server(True)), 300)
    )

    # OpenAI and Anthropic clients: the model API is a MockTransport whose body streams in
    # (as from the network); the guarded client checks, reads usage, prices it.
    def answer(body: dict[str, Any]) -> Callable[[httpx2.Request], httpx2.Response]:
        raw = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        return lambda request: httpx2.Response(200, headers=headers, content=iter([raw]))

    usage = {"prompt_tokens": 812, "completion_tokens": 95, "total_tokens": 907}
    chat = answer({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-5",
                   "choices": [{"index": 0, "finish_reason": "stop", "message":
                                {"role": "assistant", "content": "Shipped."}}],
                   "usage": usage})  # fmt: skip
    plain_openai = openai.OpenAI(
        api_key="sk-bench", http_client=httpx2.Client(transport=httpx2.MockTransport(chat))
    )
    guarded_openai = ag_openai_client.guard_openai(
        plain_openai, guard, prices={"gpt-5": (1.25, 10.0)}, transport=httpx2.MockTransport(chat)
    )
    messages: Any = [{"role": "user", "content": "Where is my order?"}]
    out.append(
        (
            "openai",
            "client.chat.completions.create (MockTransport)",
            sync_loop(
                lambda: plain_openai.chat.completions.create(model="gpt-5", messages=messages)
            ),
            sync_loop(
                lambda: guarded_openai.chat.completions.create(model="gpt-5", messages=messages)
            ),
            500,
        )
    )
    message = answer({"id": "m1", "type": "message", "role": "assistant",
                      "model": "claude-haiku-4-5", "stop_reason": "end_turn",
                      "content": [{"type": "text", "text": "Shipped."}],
                      "usage": {"input_tokens": 812, "output_tokens": 95}})  # fmt: skip
    plain_anthropic = anthropic.Anthropic(
        api_key="sk-bench", http_client=httpx2.Client(transport=httpx2.MockTransport(message))
    )
    guarded_anthropic = ag_anthropic.guard_anthropic(
        plain_anthropic,
        guard,
        prices={"claude-haiku-4-5": (1.0, 5.0)},
        transport=httpx2.MockTransport(message),
    )
    kwargs: Any = {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": messages}
    out.append(
        (
            "anthropic",
            "client.messages.create (MockTransport)",
            sync_loop(lambda: plain_anthropic.messages.create(**kwargs)),
            sync_loop(lambda: guarded_anthropic.messages.create(**kwargs)),
            500,
        )
    )
    out += pydantic_ai_cases(guard)
    out += smolagents_cases(guard)
    out += llama_index_cases(guard)
    out.extend(autogen_cases(guard))
    out.extend(google_adk_cases(guard))
    out.extend(model_hook_cases(guard))
    return out


def autogen_cases(guard: Guard) -> list[tuple[str, str, Loop, Loop, int]]:
    """AutoGen AgentChat: a tool's run_json, and an AssistantAgent run with one tool call."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core import CancellationToken, FunctionCall
    from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
    from autogen_core.tools import FunctionTool
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from agentguard.integrations import autogen as ag_autogen

    async def lookup(query: str) -> str:
        """Look up."""
        return query

    plain_tool = FunctionTool(lookup, description="Look up.")
    guarded_tool = ag_autogen.guard_tool(plain_tool, guard=guard)
    token = CancellationToken()
    args = {"query": "x"}
    out: list[tuple[str, str, Loop, Loop, int]] = [
        (
            "autogen",
            "await tool.run_json(args, token), async tool",
            async_loop(lambda: plain_tool.run_json(args, token, call_id="c1")),
            async_loop(lambda: guarded_tool.run_json(args, token, call_id="c1")),
            3_000,
        )
    ]

    info = ModelInfo(
        vision=False,
        function_calling=True,
        json_output=False,
        family=ModelFamily.UNKNOWN,
        structured_output=False,
    )
    call = FunctionCall(id="c1", name="lookup", arguments='{"query": "x"}')
    usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
    turn = CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False)

    def agent(guarded: bool) -> tuple[AssistantAgent, ReplayChatCompletionClient]:
        client = ReplayChatCompletionClient([turn], model_info=info)
        made = AssistantAgent("bench_bot", model_client=client, tools=[plain_tool])
        return (ag_autogen.guard_agent(made, guard=guard) if guarded else made), client

    def run(made: tuple[AssistantAgent, ReplayChatCompletionClient], stop: bool) -> Loop:
        bot, client = made

        async def once() -> None:
            client.reset()  # the same scripted turn again, from a fresh context
            await bot.on_reset(token)
            if stop:
                async for _ in ag_autogen.stop_on_refusal(bot, task="go"):
                    pass
            else:
                async for _ in bot.run_stream(task="go"):
                    pass

        return async_loop(once)

    plain_agent, guarded_agent = agent(False), agent(True)
    out.append(
        (
            "autogen",
            "AssistantAgent.run_stream, 1 tool call: guard_agent",
            run(plain_agent, False),
            run(guarded_agent, False),
            300,
        )
    )
    out.append(
        (
            "autogen",
            "same, through stop_on_refusal",
            run(plain_agent, False),
            run(guarded_agent, True),
            300,
        )
    )
    return out


def google_adk_cases(guard: Guard) -> list[tuple[str, str, Loop, Loop, int]]:
    """Google ADK: a runner run with one tool call, and the plugin callbacks of one call."""
    out: list[tuple[str, str, Loop, Loop, int]] = []

    class LookupModel(BaseLlm):
        """Calls ``lookup`` once, then answers."""

        model: str = "scripted"

        async def generate_content_async(
            self, llm_request: LlmRequest, stream: bool = False
        ) -> Any:
            if any(p.function_response for c in llm_request.contents for p in c.parts or []):
                yield LlmResponse(content=types.ModelContent("done"))
            else:
                call = types.FunctionCall(name="lookup", args={"query": "x"}, id="c1")
                yield LlmResponse(
                    content=types.Content(role="model", parts=[types.Part(function_call=call)])
                )

    class PassThroughPlugin(BasePlugin):
        async def before_tool_callback(self, **kwargs: Any) -> None:
            return None

        async def after_tool_callback(self, **kwargs: Any) -> None:
            return None

    class KeepsACall(BasePlugin):
        def __init__(self) -> None:
            super().__init__("keeps-a-call")
            self.kwargs: dict[str, Any] = {}

        async def before_tool_callback(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    def adk_lookup(query: str) -> str:
        """Look up."""
        return query

    def adk_runner(plugin: BasePlugin | None = None, guarded: bool = False) -> InMemoryRunner:
        runner = InMemoryRunner(
            agent=LlmAgent(name="bench_bot", model=LookupModel(), tools=[adk_lookup])
        )
        if plugin is not None:
            runner.plugin_manager.register_plugin(plugin)
        return ag_adk.guard_runner(runner, guard=guard) if guarded else runner

    def adk_run(runner: InMemoryRunner) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            session = await runner.session_service.create_session(
                app_name=runner.app_name, user_id="u"
            )
            message = types.UserContent("go")
            async for _ in runner.run_async(
                user_id="u", session_id=session.id, new_message=message
            ):
                pass

        return call

    out.append(
        (
            "google_adk",
            "runner.run_async, 1 tool call: guard_runner",
            async_loop(adk_run(adk_runner())),
            async_loop(adk_run(adk_runner(guarded=True))),
            30,
        )
    )

    # An ADK run takes tens of ms and varies far more than a check costs: also the plugin
    # callbacks of one tool call alone, through ADK's plugin manager, against a plugin that
    # does nothing (with the arguments of a real call).
    keeps = KeepsACall()
    asyncio.run(adk_run(adk_runner(keeps))())

    def callbacks(manager: PluginManager) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            await manager.run_before_tool_callback(**keeps.kwargs)
            await manager.run_after_tool_callback(**keeps.kwargs, result={"result": "x"})

        return call

    out.append(
        (
            "google_adk",
            "plugin callbacks of 1 tool call, vs. a pass-through plugin",
            async_loop(callbacks(PluginManager([PassThroughPlugin("pass-through")]))),
            async_loop(callbacks(PluginManager([ag_adk.AgentGuardPlugin(guard)]))),
            5_000,
        )
    )
    return out


def pydantic_ai_cases(guard: Guard) -> list[Case]:
    def lookup(query: str) -> str:
        """Look up."""
        return query

    plain = FunctionToolset([lookup])
    guarded = ag_pydantic_ai.guard_toolset(plain, guard=guard)

    def respond(messages: list[Any], info: Any) -> ModelResponse:
        if len(messages) == 1:  # the prompt: call the tool; then answer
            return ModelResponse(parts=[ToolCallPart("lookup", {"query": "x"}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("done")])

    model = FunctionModel(respond)
    ctx = RunContext(deps=None, model=model, usage=RunUsage(), run_id="run-1", tool_call_id="c1")
    tool = asyncio.run(plain.get_tools(ctx))["lookup"]
    args = {"query": "x"}
    plain_agent = PydanticAgent(model, name="bench-bot", toolsets=[plain])
    wrapped_agent = PydanticAgent(model, name="bench-bot", toolsets=[WrapperToolset(plain)])
    guarded_agent = PydanticAgent(model, name="bench-bot", toolsets=[guarded])
    return [
        (
            "pydantic_ai",
            "await toolset.call_tool(...)",
            async_loop(lambda: plain.call_tool("lookup", args, ctx, tool)),
            async_loop(lambda: guarded.call_tool("lookup", args, ctx, tool)),
            3_000,
        ),
        (
            "pydantic_ai",
            "Agent.run, 1 tool call",
            async_loop(lambda: plain_agent.run("go")),
            async_loop(lambda: guarded_agent.run("go")),
            60,
        ),
        (
            "pydantic_ai",
            "same, vs. a pass-through WrapperToolset",
            async_loop(lambda: wrapped_agent.run("go")),
            async_loop(lambda: guarded_agent.run("go")),
            60,
        ),
    ]


class SmolScript(SmolModel):
    """Calls ``lookup``, then answers; again for the next run."""

    def __init__(self) -> None:
        super().__init__(model_id="scripted")
        self.turn = 0

    def generate(self, messages: Any, **kwargs: Any) -> SmolMessage:
        self.turn += 1
        name, arguments = (
            ("lookup", {"query": "x"}) if self.turn % 2 else ("final_answer", {"answer": "done"})
        )
        function = ChatMessageToolCallFunction(name=name, arguments=arguments)
        call = ChatMessageToolCall(function, id=f"c{self.turn}", type="function")
        return SmolMessage(role=SmolRole.ASSISTANT, content="", tool_calls=[call])


class SmolLookup(SmolTool):
    name = "lookup"
    description = "Look up."
    inputs = {"query": {"type": "string", "description": "What to look up."}}
    output_type = "string"

    def forward(self, query: str) -> str:
        return query


def smolagents_cases(guard: Guard) -> list[Case]:
    def agent() -> Any:
        return ToolCallingAgent(
            tools=[SmolLookup()], model=SmolScript(), name="bench_bot", verbosity_level=LogLevel.OFF
        )

    plain_agent, guarded_agent = agent(), ag_smolagents.guard_agent(agent(), guard=guard)
    args = {"query": "x"}
    return [
        (
            "smolagents",
            "agent.execute_tool_call(name, args)",
            sync_loop(lambda: plain_agent.execute_tool_call("lookup", args)),
            sync_loop(lambda: guarded_agent.execute_tool_call("lookup", args)),
            50_000,
        ),
        (
            "smolagents",
            "ToolCallingAgent.run, 1 tool call: guard_agent",
            sync_loop(lambda: plain_agent.run("go", max_steps=2)),
            sync_loop(lambda: guarded_agent.run("go", max_steps=2)),
            60,
        ),
    ]


def llama_index_cases(guard: Guard) -> list[Case]:
    def lookup(query: str) -> str:
        """Look up."""
        return query

    plain = FunctionTool.from_defaults(lookup)
    guarded = ag_llama_index.guard_tool(plain, guard=guard)

    def respond(messages: list[LlamaMessage], **kwargs: Any) -> LlamaMessage:
        if messages[-1].role == LlamaRole.TOOL:  # answer once the tool has run
            return LlamaMessage(role=LlamaRole.ASSISTANT, content="done")
        call = ToolCallBlock(tool_name="lookup", tool_kwargs={"query": "x"}, tool_call_id="c1")
        return LlamaMessage(role=LlamaRole.ASSISTANT, blocks=[call])

    llm = MockFunctionCallingLLM(response_generator=respond)
    plain_agent = FunctionAgent(name="bench-bot", tools=[plain], llm=llm)
    guarded_agent = FunctionAgent(name="bench-bot", tools=[guarded], llm=llm)

    async def run_plain() -> Any:
        return await plain_agent.run("go")

    async def run_streamed() -> Any:  # what stop_on_refusal does, without the guard
        handler = plain_agent.run("go")
        async for _ in handler.stream_events():
            pass
        return await handler

    async def run_guarded() -> Any:
        return await ag_llama_index.stop_on_refusal(guarded_agent.run("go"))

    return [
        (
            "llama_index",
            "tool.call(query=...)",
            sync_loop(lambda: plain.call(query="x")),
            sync_loop(lambda: guarded.call(query="x")),
            3_000,
        ),
        (
            "llama_index",
            "await tool.acall(query=...)",
            async_loop(lambda: plain.acall(query="x")),
            async_loop(lambda: guarded.acall(query="x")),
            2_000,
        ),
        (
            "llama_index",
            "FunctionAgent run, 1 tool call: guarded tools",
            async_loop(run_plain),
            async_loop(lambda: guarded_agent.run("go")),
            20,
        ),
        (
            "llama_index",
            "same, awaited through stop_on_refusal",
            async_loop(run_plain),
            async_loop(run_guarded),
            20,
        ),
        (
            "llama_index",
            "same, vs. a plain run whose events are streamed",
            async_loop(run_streamed),
            async_loop(run_guarded),
            20,
        ),
    ]


def model_hook_cases(guard: Guard) -> list[tuple[str, str, Loop, Loop, int]]:
    """Model calls guarded through the frameworks' own hooks, each against a hook of the same
    kind that does nothing: the guard's check and the usage, cost and span it records."""
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import ModelResponse as PydanticResponse
    from pydantic_ai.messages import TextPart
    from pydantic_ai.models.function import FunctionModel
    from pydantic_ai.usage import RequestUsage

    from agentguard.integrations import pydantic_ai as ag_pydantic_ai

    out: list[tuple[str, str, Loop, Loop, int]] = []
    prices = {"gpt-5": (1.25, 10.0), "gemini-2.5-flash": (0.30, 2.50)}
    usage = {"input_tokens": 900, "output_tokens": 100, "total_tokens": 1_000}

    # LangChain: a create_agent run of one model call, no tool.
    class NamedModel(FakeMessagesListChatModel):
        model_name: str = "gpt-5"

    class PassThroughModel(AgentMiddleware):  # type: ignore[type-arg]
        """Both hooks, as AgentGuardMiddleware has (a tool hook gives the graph a tool node)."""

        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

        def wrap_tool_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

    def lc_agent(middleware: AgentMiddleware) -> Any:  # type: ignore[type-arg]
        model = NamedModel(responses=[AIMessage("done", usage_metadata=usage)])  # type: ignore[arg-type]
        return create_agent(model, [], name="bench-bot", middleware=[middleware])

    plain_lc = lc_agent(PassThroughModel())
    guarded_lc = lc_agent(ag_langchain.AgentGuardMiddleware(guard, models=True, prices=prices))
    request = {"messages": [("user", "hi")]}
    out.append(
        (
            "langchain",
            "create_agent run, 1 model call: models=True, vs. a pass-through",
            sync_loop(lambda: plain_lc.invoke(request)),
            sync_loop(lambda: guarded_lc.invoke(request)),
            200,
        )
    )

    # The hook alone, called as create_agent calls it, with a handler answering at once.
    lc_request = ModelRequest(model=NamedModel(responses=[]), messages=[])
    lc_response = LcModelResponse(result=[AIMessage("done", usage_metadata=usage)])  # type: ignore[arg-type]
    lc_guarded = ag_langchain.AgentGuardMiddleware(guard, models=True, prices=prices)
    lc_pass = PassThroughModel()
    out.append(
        (
            "langchain",
            "wrap_model_call of 1 model call (models=True), vs. a pass-through",
            sync_loop(lambda: lc_pass.wrap_model_call(lc_request, lambda r: lc_response)),
            sync_loop(lambda: lc_guarded.wrap_model_call(lc_request, lambda r: lc_response)),
            20_000,
        )
    )

    # Pydantic AI: Agent.run of one model request.
    async def respond(messages: Any, info: Any) -> PydanticResponse:
        return PydanticResponse(
            parts=[TextPart("done")], usage=RequestUsage(input_tokens=900, output_tokens=100)
        )

    class PassThroughCapability(AbstractCapability[Any]):
        async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
            return await handler(request_context)

    def pa_agent(capability: AbstractCapability[Any]) -> Any:
        model = FunctionModel(respond, model_name="gpt-5")
        return PydanticAgent(model, name="bench-bot", capabilities=[capability])

    plain_pa = pa_agent(PassThroughCapability())
    guarded_pa = pa_agent(ag_pydantic_ai.AgentGuardCapability(guard, prices=prices))
    out.append(
        (
            "pydantic_ai",
            "await Agent.run, 1 model request: AgentGuardCapability, vs. a pass-through",
            async_loop(lambda: plain_pa.run("hi")),
            async_loop(lambda: guarded_pa.run("hi")),
            300,
        )
    )

    # The hook alone, with the run context and request of a real run.
    class KeepsARequest(AbstractCapability[Any]):
        async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
            self.kept = (ctx, request_context)
            return await handler(request_context)

    keeps_request = KeepsARequest()
    asyncio.run(pa_agent(keeps_request).run("hi"))
    pa_ctx, pa_request = keeps_request.kept
    pa_response = PydanticResponse(
        parts=[TextPart("done")], usage=RequestUsage(input_tokens=900, output_tokens=100)
    )

    async def answer(request_context: Any) -> PydanticResponse:
        return pa_response

    def pa_hook(capability: AbstractCapability[Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: capability.wrap_model_request(
            pa_ctx, request_context=pa_request, handler=answer
        )

    out.append(
        (
            "pydantic_ai",
            "wrap_model_request of 1 model request, vs. a pass-through",
            async_loop(pa_hook(PassThroughCapability())),
            async_loop(pa_hook(ag_pydantic_ai.AgentGuardCapability(guard, prices=prices))),
            20_000,
        )
    )

    # Google ADK: the plugin callbacks of one model call, with the arguments of a real one.
    class KeepsAModelCall(BasePlugin):
        def __init__(self) -> None:
            super().__init__("keeps-a-model-call")
            self.before: dict[str, Any] = {}
            self.after: dict[str, Any] = {}

        async def before_model_callback(self, **kwargs: Any) -> None:
            self.before = kwargs

        async def after_model_callback(self, **kwargs: Any) -> None:
            self.after = kwargs

    class PassThroughModelPlugin(BasePlugin):
        async def before_model_callback(self, **kwargs: Any) -> None:
            return None

        async def after_model_callback(self, **kwargs: Any) -> None:
            return None

    class Answers(BaseLlm):
        model: str = "gemini-2.5-flash"

        async def generate_content_async(
            self, llm_request: LlmRequest, stream: bool = False
        ) -> Any:
            yield LlmResponse(
                content=types.ModelContent("done"),
                usage_metadata=types.GenerateContentResponseUsageMetadata(
                    prompt_token_count=900, candidates_token_count=100
                ),
            )

    keeps = KeepsAModelCall()
    runner = InMemoryRunner(agent=LlmAgent(name="bench_bot", model=Answers()))
    runner.plugin_manager.register_plugin(keeps)

    async def one_run() -> None:
        session = await runner.session_service.create_session(app_name=runner.app_name, user_id="u")
        async for _ in runner.run_async(
            user_id="u", session_id=session.id, new_message=types.UserContent("go")
        ):
            pass

    asyncio.run(one_run())

    def callbacks(manager: PluginManager) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            await manager.run_before_model_callback(**keeps.before)
            await manager.run_after_model_callback(**keeps.after)

        return call

    guarded_plugin = ag_adk.AgentGuardPlugin(guard, models=True, prices=prices)
    out.append(
        (
            "google_adk",
            "plugin callbacks of 1 model call (models=True), vs. a pass-through",
            async_loop(callbacks(PluginManager([PassThroughModelPlugin("pass-through")]))),
            async_loop(callbacks(PluginManager([guarded_plugin]))),
            5_000,
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sample's calls")
    parser.add_argument(
        "--match", nargs="+", metavar="TEXT", help="rows whose framework call contains a TEXT"
    )
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    parser.add_argument(
        "--only", help="comma-separated integrations to run (e.g. pydantic_ai,smolagents)"
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    if (only is not None or args.match) and args.update:
        parser.error("--update rewrites the whole table: run it without --only or --match")
    logging.disable(logging.WARNING)  # MCP logs every request at INFO

    guard = Guard()
    for i in range(1_000):
        guard.kill(("agent", "run", "mission", "tool")[i % 4], f"unrelated-{i}")

    rows = []
    selected = cases(guard)
    if only is not None:
        unknown = only - {case[0] for case in selected}
        if unknown:
            known = ", ".join(sorted({case[0] for case in selected}))
            parser.error(f"--only: unknown integration(s) {', '.join(sorted(unknown))}; {known}")
        selected = [case for case in selected if case[0] in only]
    with scope(**IDS):
        for integration, call, plain, guarded, calls in selected:
            if args.match and not any(text in call for text in args.match):
                continue
            n = max(1, int(calls * args.scale))
            base, wrapped = compare(plain, guarded, n, args.repeats)
            rows.append((integration, call, base, wrapped))
            print(
                f"{integration:14} {call:52} {base / 1000:9.2f} µs {wrapped / 1000:9.2f} µs "
                f"{wrapped / base:6.3f}x",
                flush=True,
            )
    assert not guard.interventions(), "the benchmark must only take the allowed path"
    guard.close()

    lines = [
        "| integration | framework call | plain (µs) | guarded (µs) | overhead (µs) | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for integration, call, base, wrapped in rows:
        lines.append(
            f"| {integration} | {call} | {base / 1000:.2f} | {wrapped / 1000:.2f} | "
            f"{(wrapped - base) / 1000:+.2f} | {wrapped / base:.3f}x |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.update:
        from _report import write_section

        write_section(
            "bench_integrations",
            "## Integration overhead (allowed path)\n\n"
            f"`python benchmarks/bench_integrations.py --repeats {args.repeats} "
            f"--scale {args.scale:g}`: each framework call unguarded and through its agentguard "
            "integration, best per-call CPU time of the process over the samples, samples "
            "interleaved, all three "
            "scope ids set, 1,000 unrelated active kills in the index.\n\n" + table,
        )


if __name__ == "__main__":
    main()
