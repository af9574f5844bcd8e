"""smolagents: guarded tools, alone and in a real ToolCallingAgent run with a scripted model."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from smolagents import CodeAgent, Tool, ToolCallingAgent
from smolagents.memory import ActionStep
from smolagents.models import (
    ChatMessage,
    ChatMessageToolCall,
    ChatMessageToolCallFunction,
    MessageRole,
    Model,
)
from smolagents.utils import AgentExecutionError, AgentToolExecutionError

from agentguard import Guard, InvalidInputError, PolicyViolationError
from agentguard.integrations.smolagents import (
    GuardedForward,
    guard_agent,
    guard_tool,
    guard_tools,
    unguard_agent,
    unguard_tools,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard


class Lookup(Tool):
    name = "lookup"
    description = "Look something up."
    inputs = {"query": {"type": "string", "description": "What to look up."}}
    output_type = "string"

    def __init__(self, body: Body) -> None:
        super().__init__()
        self.body = body

    def forward(self, query: str) -> str:
        return self.body()


class ScriptedModel(Model):
    """A model answering with these tool calls (name, args), in order; no network."""

    def __init__(self, *calls: tuple[str, dict[str, Any]]) -> None:
        super().__init__(model_id="scripted")
        self.calls = list(calls)

    def generate(self, messages: Any, **kwargs: Any) -> ChatMessage:
        name, arguments = self.calls.pop(0)
        call = ChatMessageToolCall(
            ChatMessageToolCallFunction(name=name, arguments=arguments),
            id=f"c{len(self.calls)}",
            type="function",
        )
        return ChatMessage(role=MessageRole.ASSISTANT, content="", tool_calls=[call])


def run_agent(tool: Tool, *calls: tuple[str, dict[str, Any]]) -> tuple[Any, list[ActionStep]]:
    """Run a ToolCallingAgent named ``email_bot`` through ``calls``; its answer and steps."""
    agent = ToolCallingAgent(
        tools=[tool], model=ScriptedModel(*calls), name="email_bot", verbosity_level=0
    )
    answer = agent.run("mail everyone", max_steps=len(calls))
    steps = [s for s in agent.memory.steps if isinstance(s, ActionStep)]
    return answer, steps


def test_guarded_tool_keeps_class_name_and_schema(make_guard: MakeGuard) -> None:
    tool = Lookup(lambda: "done")
    guarded = guard_tool(tool, guard=make_guard())
    assert type(guarded) is Lookup and guarded is not tool
    assert (guarded.name, guarded.description) == (tool.name, tool.description)
    assert (guarded.inputs, guarded.output_type) == (tool.inputs, tool.output_type)
    assert isinstance(guarded.forward, GuardedForward)
    assert not isinstance(tool.forward, GuardedForward)  # the original is untouched
    assert guard_tool(guarded) is guarded
    assert unguard_tools([guarded, tool]) == [tool, tool]
    assert [type(t) for t in guard_tools([tool, tool])] == [Lookup, Lookup]
    with pytest.raises(InvalidInputError, match="smolagents Tool"):
        guard_tool(object())  # type: ignore[arg-type]


SEND = ("send_email", {"to": "a@x.com"})
FINAL = ("final_answer", {"answer": "done"})


@pytest.mark.parametrize("on_block", ["raise", "message"])
def test_a_killed_agent_s_tool_is_refused_before_its_body_runs(
    make_guard: MakeGuard, hard_block: HardBlock, on_block: str
) -> None:
    guard = make_guard()
    sent: list[str] = []

    class SendEmail(Tool):
        name = "send_email"
        description = "Send an email."
        inputs = {"to": {"type": "string", "description": "Recipient."}}
        output_type = "string"

        def forward(self, to: str) -> str:
            sent.append(to)
            guard.kill("agent", "email_bot", reason="Broken link in template", actor="usr_abc")
            return "sent"

    tool = guard_tool(SendEmail(), guard=guard, on_block=on_block, agent_id="email_bot")
    answer, steps = run_agent(tool, SEND, SEND, FINAL)

    assert sent == ["a@x.com"]  # the second call was refused before the body ran
    assert answer == "done"  # smolagents goes on either way: the model decides what next
    block = hard_block(guard)
    assert (block.action, block.agent_id) == ("send_email", "email_bot")
    refused = steps[1]
    if on_block == "raise":
        # smolagents wraps the tool's exception and shows the model its text.
        assert isinstance(refused.error, AgentToolExecutionError)
        assert isinstance(refused.error.__cause__, PolicyViolationError)
        assert refused.error.__cause__.intervention_id == block.id
        text = str(refused.error)
    else:
        assert refused.error is None
        text = refused.observations or ""
    assert "agent 'email_bot' was killed by usr_abc" in text
    assert "Broken link in template" in text


class CodeModel(Model):
    """A CodeAgent's model: these code blocks, in order."""

    def __init__(self, *blocks: str) -> None:
        super().__init__(model_id="scripted")
        self.blocks = list(blocks)

    def generate(self, messages: Any, **kwargs: Any) -> ChatMessage:
        code = self.blocks.pop(0)
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"Thought: go\n<code>\n{code}\n</code>"
        )


@pytest.mark.parametrize("on_block", ["raise", "message"])
def test_a_code_agent_s_tool_calls_are_guarded(make_guard: MakeGuard, on_block: str) -> None:
    guard = make_guard()
    ran: list[str] = []
    guard.kill("tool", "lookup", reason="quota blown")
    tool = guard_tool(Lookup(lambda: ran.append("ran") or "found"), guard=guard, on_block=on_block)
    model = CodeModel('print(lookup(query="x"))', 'final_answer("done")')
    agent = CodeAgent(tools=[tool], model=model, verbosity_level=0)

    assert agent.run("look it up", max_steps=2) == "done"
    assert ran == []
    step = next(s for s in agent.memory.steps if isinstance(s, ActionStep))
    if on_block == "raise":
        assert isinstance(step.error, AgentExecutionError)
        text = str(step.error)
    else:
        assert step.error is None
        text = step.observations or ""
    assert "tool 'lookup' was killed" in text and "quota blown" in text


def send_email_tool(guard: Guard, sent: list[str]) -> Tool:
    class SendEmail(Tool):
        name = "send_email"
        description = "Send an email."
        inputs = {"to": {"type": "string", "description": "Recipient."}}
        output_type = "string"

        def forward(self, to: str) -> str:
            sent.append(to)
            guard.kill("agent", "email_bot", reason="Broken link in template", actor="usr_abc")
            return "sent"

    return SendEmail()


def test_guard_agent_ends_the_run_with_the_refusal(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    """The agent's name is its id, and a refusal stops ``run`` instead of going on to the
    model: no third model call, no final answer."""
    guard = make_guard()
    sent: list[str] = []
    model = ScriptedModel(SEND, SEND, SEND, FINAL)
    agent = ToolCallingAgent(
        tools=[send_email_tool(guard, sent)], model=model, name="email_bot", verbosity_level=0
    )
    assert guard_agent(agent, guard=guard) is agent
    with pytest.raises(PolicyViolationError, match="Broken link in template") as info:
        agent.run("mail everyone", max_steps=4)
    assert sent == ["a@x.com"]
    assert model.calls == [SEND, FINAL]  # the run stopped after the refused step
    block = hard_block(guard)
    assert (block.action, block.agent_id) == ("send_email", "email_bot")
    assert info.value.intervention_id == block.id


def test_guard_agent_in_message_mode_tells_the_model_and_goes_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    agent = ToolCallingAgent(
        tools=[send_email_tool(guard, sent)],
        model=ScriptedModel(SEND, SEND, FINAL),
        name="email_bot",
        verbosity_level=0,
    )
    guard_agent(agent, guard=guard, on_block="message")
    assert agent.run("mail everyone", max_steps=3) == "done"
    assert sent == ["a@x.com"]
    refused = [s for s in agent.memory.steps if isinstance(s, ActionStep)][1]
    assert "agent 'email_bot' was killed by usr_abc" in (refused.observations or "")


def test_guard_agent_ends_a_code_agent_s_run_too(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup", reason="quota blown")
    ran: list[str] = []
    model = CodeModel('print(lookup(query="x"))', 'final_answer("done")')
    agent = CodeAgent(
        tools=[Lookup(lambda: ran.append("ran") or "found")], model=model, verbosity_level=0
    )
    guard_agent(agent, guard=guard)
    with pytest.raises(PolicyViolationError, match="quota blown"):
        agent.run("look it up", max_steps=2)
    assert ran == [] and len(model.blocks) == 1


def test_unguard_agent_gives_the_tools_back_and_refusals_no_longer_end_the_run(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    tool = Lookup(lambda: "found")
    agent = ToolCallingAgent(tools=[tool], model=ScriptedModel(FINAL), verbosity_level=0)
    guard_agent(agent, guard=guard)
    assert isinstance(agent.tools["lookup"].forward, GuardedForward)
    assert guard_agent(agent, guard=guard).tools["lookup"] is agent.tools["lookup"]  # once
    unguard_agent(agent)
    assert agent.tools["lookup"] is tool
    guard.kill("tool", "lookup")
    assert agent.run("go", max_steps=1) == "done"


class TestContract(IntegrationContract):
    """Guarded tools keep the integration contract (a tool does not know its agent)."""

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        return guard_tool(Lookup(body), guard=guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        if sync:
            return made(query="x")
        return await asyncio.to_thread(made, query="x")  # smolagents tools are sync

    def undo(self, made: Any) -> Any:
        return unguard_tools([made])[0]

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str) and outcome.startswith("Error: "):
            return outcome
        return super().refusal(outcome)
