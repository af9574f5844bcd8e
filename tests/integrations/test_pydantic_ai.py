"""Pydantic AI: a guarded toolset, driven by Pydantic AI's own FunctionModel (no network)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from pydantic_ai import Agent, FunctionToolset, ModelRetry, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.pydantic_ai import GuardedToolset, guard_toolset, unguard_toolset

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard


def script(*calls: tuple[str, dict[str, Any], str]) -> FunctionModel:
    """A model making these tool calls (name, args, call id) one per turn, then answering
    with the tool returns it was sent, joined by " | "."""
    turns = iter(calls)

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = next(turns, None)
        if step is not None:
            return ModelResponse(parts=[ToolCallPart(step[0], step[1], tool_call_id=step[2])])
        returns = [
            str(part.content)
            for message in messages
            for part in getattr(message, "parts", [])
            if isinstance(part, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart(" | ".join(returns))])

    return FunctionModel(respond)


def lookup_toolset(body: Body) -> FunctionToolset[Any]:
    def lookup(query: str) -> str:
        """Look something up."""
        return body()

    return FunctionToolset([lookup])


async def test_guarded_toolset_keeps_the_tools_and_their_schemas(make_guard: MakeGuard) -> None:
    plain = lookup_toolset(lambda: "done")
    guarded = guard_toolset(plain, guard=make_guard())
    assert isinstance(guarded, GuardedToolset) and guarded.wrapped is plain
    assert guard_toolset(guarded) is guarded  # guarding twice is guarding once
    seen: dict[str, Any] = {}

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.update({t.name: t.parameters_json_schema for t in info.function_tools})
        return ModelResponse(parts=[TextPart("ok")])

    await Agent(FunctionModel(respond), toolsets=[guarded]).run("hi")
    guarded_schemas = dict(seen)
    seen.clear()
    await Agent(FunctionModel(respond), toolsets=[plain]).run("hi")
    assert guarded_schemas == seen and set(seen) == {"lookup"}


async def test_a_killed_agent_is_stopped_before_its_tool_runs(
    make_guard: MakeGuard, cancellation: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []

    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        guard.kill("agent", "email-bot", reason="Broken link in template", actor="usr_abc")
        return "sent"

    model = script(("send_email", {"to": "a@x.com"}, "c1"), ("send_email", {"to": "b@x.com"}, "c2"))
    tools = guard_toolset(FunctionToolset([send_email]), guard=guard)
    agent = Agent(model, name="email-bot", toolsets=[tools])
    with pytest.raises(PolicyViolationError) as caught:
        await agent.run("mail everyone", run_id="run-7")
    assert sent == ["a@x.com"]  # the second call never reached the body
    assert caught.value.reason == "Broken link in template"
    # The kill came while the first call was in flight: that call was stopped, and the run with it.
    stopped = cancellation(guard)
    assert (stopped.action, stopped.agent_id, stopped.run_id, stopped.tool_call_id) == (
        "send_email",
        "email-bot",
        "run-7",
        "c1",
    )
    assert caught.value.intervention_id == stopped.id and caught.value.cancelled


async def test_on_block_message_tells_the_model_and_the_run_goes_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []

    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return "sent"

    guard.kill("agent", "email-bot", reason="spam wave", actor="usr_ops")
    model = script(("send_email", {"to": "a@x.com"}, "c1"))
    tools = guard_toolset(FunctionToolset([send_email]), guard=guard, on_block="message")
    result = await Agent(model, name="email-bot", toolsets=[tools]).run("mail")
    assert sent == []
    assert "agent 'email-bot' was killed by usr_ops" in result.output
    assert "spam wave" in result.output


async def test_model_retry_passes_through_and_counts_as_failed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    tries: list[int] = []

    def flaky(query: str) -> str:
        """Fails once, asking the model to retry."""
        tries.append(1)
        if len(tries) == 1:
            raise ModelRetry("try again")
        return "found"

    model = script(("flaky", {"query": "x"}, "c1"), ("flaky", {"query": "x"}, "c2"))
    tools = guard_toolset(FunctionToolset([flaky]), guard=guard)
    result = await Agent(model, toolsets=[tools]).run("go")
    assert "found" in result.output
    counts = guard.counts(action="flaky")
    assert (counts.executed, counts.failed) == (2, 1)


class TestContract(IntegrationContract):
    """A guarded toolset keeps the integration contract; the agent's name is its id."""

    sync_path = False  # Agent.run_sync cannot run inside the test's event loop
    found_agent = "pa-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        return guard_toolset(lookup_toolset(body), guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        agent = Agent(script(("lookup", {"query": "x"}, "c1")), name="pa-agent", toolsets=[made])
        return (await agent.run("look it up")).output

    def undo(self, made: Any) -> Any:
        return unguard_toolset(made)

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if " refused: " in outcome else None
        return super().refusal(outcome)


def test_run_context_is_what_the_adapter_reads() -> None:
    assert {"agent", "run_id", "tool_call_id"} <= set(RunContext.__dataclass_fields__)
