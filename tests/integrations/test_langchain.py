"""LangChain: guarded tools and the ``create_agent`` middleware, with the real packages."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel, Field

from agentguard import Guard, InterventionType, InvalidInputError, PolicyViolationError, scope
from agentguard.integrations.langchain import (
    AgentGuardMiddleware,
    GuardedTool,
    guard_tool,
    guard_tools,
    unguard_tools,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans


class ToolCallingFakeModel(FakeMessagesListChatModel):
    """LangChain's fake chat model, binding tools the way a provider's model does."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def calls(*steps: tuple[str, dict[str, Any], str] | str) -> ToolCallingFakeModel:
    """A model answering with these tool calls (name, args, id), or final texts, in order."""
    responses = [
        AIMessage(step)
        if isinstance(step, str)
        else AIMessage("", tool_calls=[{"name": step[0], "args": step[1], "id": step[2]}])
        for step in steps
    ]
    return ToolCallingFakeModel(responses=responses)


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"found {query}"


class EmailArgs(BaseModel):
    to: str = Field(description="recipient")
    body: str = ""


def _send(to: str, body: str = "") -> str:
    return f"sent to {to}"


async def _asend(to: str, body: str = "") -> str:
    return f"sent to {to} (async)"


send_email = StructuredTool.from_function(
    func=_send,
    coroutine=_asend,
    name="send_email",
    description="Send an email.",
    args_schema=EmailArgs,
)


class RefundArgs(BaseModel):
    order_id: str


class RefundTool(BaseTool):
    """A custom BaseTool subclass with sync and async bodies."""

    name: str = "refund"
    description: str = "Refund an order."
    args_schema: type[BaseModel] = RefundArgs

    def _run(self, order_id: str) -> str:
        return f"refunded {order_id}"

    async def _arun(self, order_id: str) -> str:
        return f"refunded {order_id} (async)"


TOOLS = {"lookup": lookup, "send_email": send_email, "refund": RefundTool()}
ARGS = {
    "lookup": {"query": "cats"},
    "send_email": {"to": "a@example.com"},
    "refund": {"order_id": "o-1"},
}


def tool_call(name: str, call_id: str = "call-1") -> dict[str, Any]:
    return {"name": name, "args": ARGS[name], "id": call_id, "type": "tool_call"}


@pytest.mark.parametrize("name", list(TOOLS))
def test_guarded_tool_keeps_type_and_schema(make_guard: MakeGuard, name: str) -> None:
    original = TOOLS[name]
    guarded = guard_tool(original, guard=make_guard())

    assert isinstance(guarded, BaseTool) and isinstance(guarded, type(original))
    assert isinstance(guarded, GuardedTool) and guarded.__wrapped__ is original
    assert (guarded.name, guarded.description) == (original.name, original.description)
    assert guarded.args_schema is original.args_schema
    schema = original.tool_call_schema.model_json_schema()
    assert guarded.tool_call_schema.model_json_schema() == schema
    assert guarded.args == original.args
    assert convert_to_openai_tool(guarded) == convert_to_openai_tool(original)
    bound = ToolCallingFakeModel(responses=[]).bind_tools([guarded])
    assert bound.kwargs["tools"] == [convert_to_openai_tool(original)]
    assert (
        type(original)
        is {"lookup": StructuredTool, "send_email": StructuredTool, "refund": RefundTool}[name]
    )  # the framework's object is untouched


@pytest.mark.parametrize("name", list(TOOLS))
async def test_invoke_and_ainvoke_allowed_refused_revived(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, name: str
) -> None:
    guard = make_guard()
    guarded = guard_tool(TOOLS[name], guard=guard)

    with scope(agent_id="support-bot", run_id="run-1"):
        allowed = guarded.invoke(tool_call(name))
        assert isinstance(allowed, ToolMessage) and allowed.status == "success"
        assert await guarded.ainvoke(ARGS[name])

        guard.kill("agent", "support-bot", reason="refund loop", actor="usr_ops")
        with spans.tracer.start_as_current_span("invoke_agent support-bot") as agent_span:
            with pytest.raises(PolicyViolationError) as caught:
                guarded.invoke(tool_call(name, "call-9"))
        assert (caught.value.target_type, caught.value.target_id) == ("agent", "support-bot")
        block = hard_block(guard)
        assert (block.action, block.tool_call_id, block.run_id) == (name, "call-9", "run-1")
        span = spans.one_block(f"execute_tool {name}", name)
        assert span.attributes["gen_ai.tool.call.id"] == "call-9"
        assert span.parent.span_id == agent_span.get_span_context().span_id

        with pytest.raises(PolicyViolationError):
            await guarded.ainvoke(tool_call(name, "call-10"))
        assert TOOLS[name].invoke(ARGS[name])  # the original tool is not guarded

        guard.revive("agent", "support-bot")
        assert guarded.invoke(ARGS[name])
    assert guard.counts(action=name).model_dump() == {
        "executed": 3,
        "refused": 2,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 0,
    }


async def test_every_runnable_entry_point_is_guarded(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guarded = guard_tool(send_email, guard=guard)
    guard.kill("tool", "send_email")
    args = ARGS["send_email"]

    entry_points = [
        lambda: guarded.run(args),
        lambda: guarded.batch([args]),
        lambda: list(guarded.stream(args)),
        lambda: guarded.with_config(tags=["x"]).invoke(args),
        lambda: guarded.with_retry(stop_after_attempt=1).invoke(args),
        lambda: (guarded | RunnableLambda(str)).invoke(args),
        lambda: (RunnableLambda(lambda x: x) | guarded).invoke(args),
        lambda: copy.copy(guarded).invoke(args),
        lambda: copy.deepcopy(guarded).invoke(args),
    ]
    for call in entry_points:
        with pytest.raises(PolicyViolationError):
            call()
    for acall in (guarded.arun(args), guarded.abatch([args])):
        with pytest.raises(PolicyViolationError):
            await acall
    with pytest.raises(PolicyViolationError):
        async for _ in guarded.astream(args):
            pass
    assert guard.counts(action="send_email").refused == len(entry_points) + 3


def test_handle_tool_error_does_not_swallow_the_refusal(make_guard: MakeGuard) -> None:
    guard = make_guard()
    forgiving = StructuredTool.from_function(
        func=_send,
        name="send_email",
        description="Send.",
        handle_tool_error=True,
        handle_validation_error=True,
    )
    guarded = guard_tool(forgiving, guard=guard)
    guard.kill("tool", "send_email")
    with pytest.raises(PolicyViolationError):
        guarded.invoke(tool_call("send_email"))


def test_on_block_message_answers_the_model(make_guard: MakeGuard, hard_block: HardBlock) -> None:
    guard = make_guard()
    guarded = guard_tool(send_email, guard=guard, on_block="message")
    guard.kill("tool", "send_email", reason="bounced mails", actor="usr_ops")

    answer = guarded.invoke(tool_call("send_email", "call-3"))
    assert isinstance(answer, ToolMessage) and answer.status == "error"
    assert answer.tool_call_id == "call-3" and answer.name == "send_email"
    assert "tool 'send_email' was killed by usr_ops" in answer.content
    assert "bounced mails" in answer.content
    assert "bounced mails" in guarded.invoke(ARGS["send_email"])  # no tool call id: plain text
    assert len(guard.interventions()) == 2


def in_graph(node: ToolNode) -> Any:
    """A one-node LangGraph graph around a ``ToolNode`` (it needs a graph runtime)."""
    graph = StateGraph(MessagesState)
    graph.add_node("tools", node)
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    return graph.compile()


def test_tool_node_runs_guarded_tools(make_guard: MakeGuard, hard_block: HardBlock) -> None:
    guard = make_guard()
    node = ToolNode(guard_tools(TOOLS.values(), guard=guard))
    assert all(isinstance(t, GuardedTool) for t in node.tools_by_name.values())
    request = {"messages": [AIMessage("", tool_calls=[tool_call("refund", "call-5")])]}

    result = in_graph(node).invoke(request)
    assert result["messages"][-1].content == "refunded o-1"
    guard.kill("tool", "refund", reason="fraud review")
    with pytest.raises(PolicyViolationError):
        in_graph(node).invoke(request)
    assert hard_block(guard).tool_call_id == "call-5"

    polite = ToolNode(guard_tools([RefundTool()], guard=guard, on_block="message"))
    message = in_graph(polite).invoke(request)["messages"][-1]
    assert message.status == "error" and "fraud review" in message.content


def test_agent_killed_mid_run_refuses_the_next_tool_call(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []

    @tool
    def send(to: str) -> str:
        """Send an email."""
        sent.append(to)
        guard.kill("agent", "email-bot", reason="Broken link in template", actor="usr_abc")
        return "sent"

    model = calls(
        ("send", {"to": "a@x.com"}, "call-1"), ("send", {"to": "b@x.com"}, "call-2"), "done"
    )
    agent = create_agent(model, guard_tools([send], guard=guard), name="email-bot")

    config = {"configurable": {"thread_id": "t-7"}}
    with spans.tracer.start_as_current_span("invoke_agent email-bot") as agent_span:
        with pytest.raises(PolicyViolationError) as caught:
            agent.invoke({"messages": [("user", "mail everyone")]}, config)

    assert sent == ["a@x.com"]  # the second body never ran
    assert caught.value.reason == "Broken link in template"
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id, block.tool_call_id) == (
        "send",
        "email-bot",
        "t-7",
        "call-2",
    )
    span = spans.one_block("execute_tool send", "send")
    assert span.attributes["gen_ai.agent.id"] == "email-bot"
    assert span.parent.span_id == agent_span.get_span_context().span_id

    guard.revive("agent", "email-bot")  # revived: the next run goes through
    resumed = create_agent(
        calls(("send", {"to": "c@x.com"}, "call-1"), "done"),
        guard_tools([send], guard=guard),
        name="email-bot",
    )
    assert resumed.invoke({"messages": [("user", "again")]})["messages"][-1].content == "done"
    assert sent == ["a@x.com", "c@x.com"]


def test_middleware_message_mode_lets_the_run_go_on(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    executed: list[str] = []

    @tool
    def lookup_order(order_id: str) -> str:
        """Look up an order."""
        executed.append(order_id)
        guard.kill("run", "thread-42", reason="customer opted out", actor="usr_ops")
        return "order found"

    model = calls(
        ("lookup_order", {"order_id": "1"}, "call-1"),
        ("lookup_order", {"order_id": "2"}, "call-2"),
        "I cannot continue: the run was stopped.",
    )
    agent = create_agent(
        model,
        [lookup_order],
        name="support-bot",
        middleware=[AgentGuardMiddleware(guard=guard, on_block="message")],
    )
    config = {"configurable": {"thread_id": "thread-42"}}
    result = agent.invoke({"messages": [("user", "orders?")]}, config)

    assert executed == ["1"]
    refusal = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
    assert refusal.status == "error" and refusal.tool_call_id == "call-2"
    assert "run 'thread-42' was killed by usr_ops" in refusal.content
    assert "customer opted out" in refusal.content
    assert result["messages"][-1].content == "I cannot continue: the run was stopped."
    block = hard_block(guard)
    assert (block.target_type, block.agent_id, block.run_id) == ("run", "support-bot", "thread-42")
    assert isinstance(lookup_order, StructuredTool)  # the agent's own tool was never wrapped


async def test_middleware_async_raise_mode(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    middleware = AgentGuardMiddleware(guard=guard)
    agent = create_agent(
        calls(("lookup", {"query": "x"}, "call-1"), "done"),
        [lookup],
        name="bot",
        middleware=[middleware],
    )
    assert (await agent.ainvoke({"messages": [("user", "hi")]}))["messages"][-1].content == "done"

    guard.kill("tool", "lookup", reason="index rebuilding")
    agent = create_agent(
        calls(("lookup", {"query": "x"}, "call-1"), "done"),
        [lookup],
        name="bot",
        middleware=[middleware],
    )
    with pytest.raises(PolicyViolationError, match="index rebuilding"):
        await agent.ainvoke({"messages": [("user", "hi")]})
    assert hard_block(guard).agent_id == "bot"
    spans.one_block("execute_tool lookup", "lookup")


def test_scope_precedence_fixed_then_agentguard_scope_then_config(make_guard: MakeGuard) -> None:
    guard = make_guard()
    config = {"configurable": {"thread_id": "t-1"}, "metadata": {"lc_agent_name": "from-config"}}
    guarded = guard_tool(lookup, guard=guard, on_block="message")
    fixed = guard_tool(lookup, guard=guard, on_block="message", agent_id="fixed-agent")
    guard.kill("tool", "lookup")

    guarded.invoke(ARGS["lookup"], config)
    with scope(agent_id="scoped-agent"):
        guarded.invoke(ARGS["lookup"], config)
        fixed.invoke(ARGS["lookup"], config)
    agents = [(iv.agent_id, iv.run_id) for iv in reversed(guard.interventions())]
    assert agents == [("from-config", "t-1"), ("scoped-agent", "t-1"), ("fixed-agent", "t-1")]


def test_guarding_is_idempotent_and_reversible(make_guard: MakeGuard) -> None:
    guard = make_guard()
    originals = list(TOOLS.values())
    guarded = guard_tools(originals, guard=guard)
    assert all(a is b for a, b in zip(guard_tools(guarded, guard=guard), guarded, strict=True))
    assert all(a is b for a, b in zip(unguard_tools(guarded), originals, strict=True))
    assert unguard_tools(originals) == originals


def test_plain_functions_become_tools_and_bad_input_is_refused(make_guard: MakeGuard) -> None:
    guard = make_guard()

    def ping(host: str) -> str:
        """Ping a host."""
        return "pong"

    (guarded,) = guard_tools([ping], guard=guard)
    assert isinstance(guarded, StructuredTool) and guarded.name == "ping"
    assert guarded.invoke({"host": "h"}) == "pong"
    with pytest.raises(InvalidInputError, match="on_block"):
        guard_tools([ping], guard=guard, on_block="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_block"):
        AgentGuardMiddleware(guard=guard, on_block="swallow")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="tool"):
        guard_tool(42, guard=guard)  # type: ignore[arg-type]


def test_default_guard_is_resolved_at_call_time() -> None:
    import agentguard

    guarded = guard_tool(lookup)  # no guard yet
    guard = Guard()
    agentguard.configure(guard)
    try:
        guard.kill("tool", "lookup")
        with pytest.raises(PolicyViolationError):
            guarded.invoke(ARGS["lookup"])
    finally:
        agentguard.configure(None)
        guard.close()


def contract_tool(body: Body) -> StructuredTool:
    async def alookup(query: str) -> str:
        return body()

    return StructuredTool.from_function(
        func=lambda query: body(), coroutine=alookup, name="lookup", description="Look up."
    )


def refusal_in(outcome: Any) -> str | None:
    """The refusal a guarded tool or agent answered with (``on_block="message"``), if any."""
    messages = outcome["messages"] if isinstance(outcome, dict) else [outcome]
    for message in messages:
        content = getattr(message, "content", message)
        if isinstance(content, str) and " refused: " in content:
            assert getattr(message, "status", "error") == "error"
            return content
    return None


class TestContract(IntegrationContract):
    """Guarded tools keep the integration contract; the run's config names the agent."""

    found_agent = "lc-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        return guard_tool(contract_tool(body), guard=guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        config = {"metadata": {"lc_agent_name": "lc-agent"}}
        if sync:
            return made.invoke(tool_call("lookup"), config)
        return await made.ainvoke(tool_call("lookup"), config)

    def undo(self, made: Any) -> Any:
        return unguard_tools([made])[0]

    def refusal(self, outcome: Any) -> str | None:
        return super().refusal(outcome) or refusal_in(outcome)


class TestMiddlewareContract(IntegrationContract):
    """The ``create_agent`` middleware keeps the integration contract; the agent's name is
    its agent id."""

    found_agent = "lc-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        middleware = AgentGuardMiddleware(guard=guard, on_block=on_block or "raise", **ids)
        return middleware, contract_tool(body)

    async def call(self, made: Any, *, sync: bool) -> Any:
        middleware, lookup_tool = made
        agent = create_agent(
            calls(("lookup", ARGS["lookup"], "call-1"), "done"),
            [lookup_tool],
            name="lc-agent",
            middleware=[middleware] if middleware else [],
        )
        messages = {"messages": [("user", "look it up")]}
        return agent.invoke(messages) if sync else await agent.ainvoke(messages)

    def undo(self, made: Any) -> Any:
        return None, made[1]  # the agent without the middleware

    def refusal(self, outcome: Any) -> str | None:
        return super().refusal(outcome) or refusal_in(outcome)


@pytest.mark.parametrize("middleware", [False, True])
def test_a_tool_error_the_tool_handles_counts_as_failed(
    make_guard: MakeGuard, middleware: bool
) -> None:
    from langchain_core.tools import ToolException

    guard = make_guard()

    def flaky(query: str) -> str:
        raise ToolException("index offline")

    handled = StructuredTool.from_function(
        func=flaky, name="lookup", description="Look up.", handle_tool_error=True
    )
    contract = TestMiddlewareContract() if middleware else TestContract()
    made = (
        (AgentGuardMiddleware(guard=guard), handled) if middleware else guard_tool(handled, guard)
    )
    outcome = asyncio.run(contract.call(made, sync=True))
    assert contract.refusal(outcome) is None
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.failed) == (1, 1)


# -- a kill while a tool runs -----------------------------------------------------------------


def kill_when_started(guard: Guard, started: threading.Event, target: str = "lc-agent") -> None:
    """Kill the agent from another thread (as a remote guard's feed does) once a tool runs."""

    def kill() -> None:
        assert started.wait(10)
        guard.kill("agent", target, reason="looping on one ticket", actor="usr_ops")

    threading.Thread(target=kill, daemon=True).start()


def slow_tools(started: threading.Event, guard: Guard) -> list[BaseTool]:
    """``wait_async`` sleeps 30 s; ``wait_sync`` loops for 30 s, checking for a kill."""

    @tool
    async def wait_async(minutes: int) -> str:
        """Wait a while."""
        started.set()
        await asyncio.sleep(30)
        return "waited"

    @tool
    def wait_sync(minutes: int) -> str:
        """Wait a while, checking for a kill."""
        started.set()
        for _ in range(3000):
            guard.raise_if_killed()
            time.sleep(0.01)
        return "waited"

    return [wait_async, wait_sync]


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("how", ["tools", "middleware"])
async def test_a_run_whose_tool_is_stopped_ends_with_the_kill(
    make_guard: MakeGuard, kind: str, how: str
) -> None:
    guard = make_guard()
    started = threading.Event()
    tools = slow_tools(started, guard)
    name = f"wait_{kind}"
    model = calls((name, {"minutes": 1}, "call-1"), "done")
    if how == "tools":
        agent = create_agent(model, guard_tools(tools, guard=guard), name="lc-agent")
    else:
        middleware = [AgentGuardMiddleware(guard=guard)]
        agent = create_agent(model, tools, name="lc-agent", middleware=middleware)
    kill_when_started(guard, started)
    begun = time.monotonic()
    with pytest.raises(PolicyViolationError) as caught:
        if kind == "async":
            await agent.ainvoke({"messages": [("user", "wait")]})
        else:
            await asyncio.to_thread(agent.invoke, {"messages": [("user", "wait")]})
    assert time.monotonic() - begun < 10
    error = caught.value
    assert error.cancelled and error.reason == "looping on one ticket" and error.action == name
    [stopped] = guard.interventions()
    assert stopped.type is InterventionType.CANCELLED and stopped.tool_call_id == "call-1"
    assert stopped.agent_id == "lc-agent" and stopped.ran_for_ms is not None
    counts = guard.counts("agent", "lc-agent")
    assert (counts.executed, counts.cancelled, counts.failed) == (1, 1, 0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_on_block_message_tells_the_model_its_tool_was_stopped(
    make_guard: MakeGuard, kind: str
) -> None:
    guard = make_guard()
    started = threading.Event()
    tools = guard_tools(slow_tools(started, guard), guard=guard, on_block="message")
    model = calls((f"wait_{kind}", {"minutes": 1}, "call-1"), "I was stopped.")
    agent = create_agent(model, tools, name="lc-agent")
    kill_when_started(guard, started)
    if kind == "async":
        result = await agent.ainvoke({"messages": [("user", "wait")]})
    else:
        result = await asyncio.to_thread(agent.invoke, {"messages": [("user", "wait")]})
    told = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert len(told) == 1 and told[0].status == "error"
    assert f"'wait_{kind}' stopped after" in told[0].content
    assert "agent 'lc-agent' was killed by usr_ops" in told[0].content
    assert result["messages"][-1].content == "I was stopped."


async def test_an_opted_out_tool_runs_to_its_end(make_guard: MakeGuard) -> None:
    guard = make_guard()
    started = threading.Event()

    @tool
    async def settle(minutes: int) -> str:
        """Settle the ledger."""
        started.set()
        await asyncio.sleep(0.3)
        return "settled"

    tools = guard_tools([settle], guard=guard, cancel_in_flight=False)
    agent = create_agent(
        calls(("settle", {"minutes": 1}, "call-1"), "done"), tools, name="lc-agent"
    )
    kill_when_started(guard, started)
    result = await agent.ainvoke({"messages": [("user", "settle")]})
    told = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in told] == ["settled"]
    assert guard.interventions() == []
