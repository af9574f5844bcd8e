"""``wait_until_revived()`` after a refusal inside a framework, whose ids came from the framework
(the agent's name), not from ``agentguard.scope``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from agentguard import PolicyViolationError, scope
from agentguard.integrations import langchain as lc
from agentguard.integrations import openai_agents as oa

if TYPE_CHECKING:
    from conftest import MakeGuard


class Model(FakeMessagesListChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"found {query}"


def lc_agent(guard: Any, *, middleware: bool) -> Any:
    model = Model(
        responses=[
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1"}]),
            AIMessage("done"),
        ]
    )
    if middleware:
        return create_agent(
            model, [lookup], name="lc-bot", middleware=[lc.AgentGuardMiddleware(guard=guard)]
        )
    return create_agent(model, lc.guard_tools([lookup], guard=guard), name="lc-bot")


@pytest.mark.parametrize("middleware", [False, True])
@pytest.mark.parametrize("in_scope", [False, True])
def test_langchain_refusal_then_wait_until_revived(
    make_guard: MakeGuard, middleware: bool, in_scope: bool
) -> None:
    guard = make_guard()
    guard.kill("agent", "lc-bot", reason="runaway")
    messages = {"messages": [{"role": "user", "content": "go"}]}
    context = scope(run_id="run-7") if in_scope else scope()
    with context:
        with pytest.raises(PolicyViolationError, match="'lc-bot' was killed"):
            lc_agent(guard, middleware=middleware).invoke(messages)
        # The refusal's agent id came from the agent's name: wait on that kill.
        assert guard.wait_until_revived(timeout=0.2) is False
        timer = threading.Timer(0.2, guard.revive, ("agent", "lc-bot"))
        timer.start()
        assert guard.wait_until_revived(timeout=10) is True
        timer.join()
        result = lc_agent(guard, middleware=middleware).invoke(messages)
    assert result["messages"][-1].content == "done"


async def test_openai_agents_refusal_then_await_revived(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("agent", "oa-bot")

    @function_tool
    def search(query: str) -> str:
        """Search."""
        return f"found {query}"

    def agent() -> Agent[Any]:
        model = ScriptedModel(
            [[function_call("search", {"query": "x"}, call_id="c1")], [assistant_message("done")]]
        )
        return Agent(name="oa-bot", model=model, tools=oa.guard_tools([search], guard=guard))

    run = RunConfig(tracing_disabled=True)
    with pytest.raises(PolicyViolationError) as caught:
        await Runner.run(agent(), "go", run_config=run)
    assert await guard.await_revived(timeout=0.1) is False
    assert await guard.await_revived(caught.value, timeout=0.1) is False
    timer = threading.Timer(0.2, guard.revive, ("agent", "oa-bot"))
    timer.start()
    assert await guard.await_revived(caught.value, timeout=10) is True
    timer.join()
    assert (await Runner.run(agent(), "go", run_config=run)).final_output == "done"


async def test_openai_agents_passes_kill_state_unavailable_through_unwrapped() -> None:
    import socket

    from agentguard import Guard, KillStateUnavailableError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    guard = Guard(nowhere, api_key="ag_x_y", start_wait=0)

    @function_tool
    def search(query: str) -> str:
        """Search."""
        return f"found {query}"

    model = ScriptedModel([[function_call("search", {"query": "x"}, call_id="c1")]])
    agent = Agent(name="oa-bot", model=model, tools=oa.guard_tools([search], guard=guard))
    try:
        with pytest.raises(KillStateUnavailableError) as caught:
            await Runner.run(agent, "go", run_config=RunConfig(tracing_disabled=True))
        assert isinstance(caught.value, oa.AgentsPolicyViolationError)
        assert not caught.value.killed
    finally:
        guard.close()
