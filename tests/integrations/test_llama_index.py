"""LlamaIndex: guarded tools, driven by a real FunctionAgent with a scripted mock LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.workflow import Context

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.llama_index import (
    GuardedTool,
    guard_tool,
    guard_tools,
    stop_on_refusal,
    unguard_tools,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard


# workflows' Workflow.__init__ inspects the agent (a pydantic model) and trips its deprecations.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecationWarning")


def script(*calls: tuple[str, dict[str, Any], str]) -> MockFunctionCallingLLM:
    """An LLM making these tool calls (name, args, call id) one per turn, then answering
    with the tool outputs it was sent, joined by " | "."""
    turns = iter(calls)

    def respond(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        step = next(turns, None)
        if step is not None:
            call = ToolCallBlock(tool_name=step[0], tool_kwargs=step[1], tool_call_id=step[2])
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        outputs = [str(m.content) for m in messages if m.role == MessageRole.TOOL]
        return ChatMessage(role=MessageRole.ASSISTANT, content=" | ".join(outputs))

    return MockFunctionCallingLLM(response_generator=respond)


def lookup_tool(body: Body) -> FunctionTool:
    def lookup(query: str) -> str:
        """Look something up."""
        return body()

    return FunctionTool.from_defaults(lookup)


def mailer(guard: Guard, sent: list[str], *, kill: bool) -> FunctionTool:
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        if kill:
            guard.kill("agent", "mailer", reason="Broken link in template", actor="usr_abc")
        return "sent"

    return FunctionTool.from_defaults(send_email)


TWO_MAILS = (("send_email", {"to": "a@x.com"}, "c1"), ("send_email", {"to": "b@x.com"}, "c2"))


def test_a_guarded_tool_keeps_its_metadata(make_guard: MakeGuard) -> None:
    plain = lookup_tool(lambda: "done")
    (guarded,) = guard_tools([plain], guard=make_guard())
    assert isinstance(guarded, GuardedTool) and isinstance(guarded, FunctionTool)
    assert guarded.metadata is plain.metadata and guarded.metadata.fn_schema is not None
    assert guarded.metadata.to_openai_tool() == plain.metadata.to_openai_tool()
    assert guard_tool(guarded) is guarded  # guarding twice is guarding once
    assert unguard_tools([guarded, plain]) == [plain, plain]


async def test_raise_stop_on_refusal_ends_the_run_at_the_first_refusal(
    make_guard: MakeGuard, cancellation: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []
    tools = guard_tools([mailer(guard, sent, kill=True)], guard=guard, agent_id="mailer")
    agent = FunctionAgent(name="mailer", tools=tools, llm=script(*TWO_MAILS, TWO_MAILS[0]))
    with pytest.raises(PolicyViolationError) as caught:
        await stop_on_refusal(agent.run("mail everyone"))
    assert sent == ["a@x.com"]  # the second call never reached the body, no third was made
    assert caught.value.reason == "Broken link in template"
    # The kill came while the first call was in flight: that call was stopped, and the run with it.
    stopped = cancellation(guard)
    assert (stopped.action, stopped.agent_id) == ("send_email", "mailer")
    assert caught.value.intervention_id == stopped.id and caught.value.cancelled


async def test_raise_without_stop_on_refusal_the_agent_tells_the_model(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    sent: list[str] = []
    tools = guard_tools([mailer(guard, sent, kill=True)], guard=guard, agent_id="mailer")
    agent = FunctionAgent(name="mailer", tools=tools, llm=script(*TWO_MAILS))
    handler = agent.run("mail everyone")
    errors = [
        event.tool_output
        async for event in handler.stream_events()
        if getattr(event, "tool_output", None) is not None and event.tool_output.is_error
    ]
    result = str(await handler)
    assert sent == ["a@x.com"]
    # FunctionAgent caught each PolicyViolationError into the output: the first call, stopped
    # in flight by the kill, then the second, refused.
    stopped, refused = errors
    assert isinstance(stopped.exception, PolicyViolationError) and stopped.exception.cancelled
    assert isinstance(refused.exception, PolicyViolationError)
    assert not refused.exception.cancelled
    assert "agent 'mailer' was killed by usr_abc" in result


async def test_on_block_message_tells_the_model_and_the_run_goes_on(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("agent", "mailer", reason="spam wave", actor="usr_ops")
    tools = guard_tools(
        [mailer(guard, sent, kill=False)], guard=guard, on_block="message", agent_id="mailer"
    )
    agent = FunctionAgent(name="mailer", tools=tools, llm=script(TWO_MAILS[0]))
    result = str(await stop_on_refusal(agent.run("mail")))  # an answered refusal passes
    assert sent == []
    assert "Error: 'send_email' refused: agent 'mailer' was killed by usr_ops" in result
    assert "spam wave" in result


async def test_a_tool_taking_the_workflow_context_still_gets_it(make_guard: MakeGuard) -> None:
    guard = make_guard()
    seen: list[Any] = []

    async def remember(ctx: Context, note: str) -> str:
        """Remember a note."""
        seen.append(ctx)
        return "ok"

    remember.__annotations__["ctx"] = Context  # LlamaIndex spots it by type, not by string
    (tool,) = guard_tools([FunctionTool.from_defaults(remember)], guard=guard)
    agent = FunctionAgent(tools=[tool], llm=script(("remember", {"note": "x"}, "c1")))
    assert str(await agent.run("go")) == "ok"
    assert len(seen) == 1 and isinstance(seen[0], Context)
    assert guard.counts(action="remember").executed == 1


class Echo(BaseTool):
    """A plain (sync only) BaseTool: agents run it through their async adapter."""

    def __init__(self, body: Body, *, is_error: bool = False) -> None:
        self.body = body
        self.is_error = is_error

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="lookup", description="Look something up.")

    def __call__(self, input: Any) -> ToolOutput:
        content = self.body()
        return ToolOutput(content=content, tool_name="lookup", raw_input={}, is_error=self.is_error)


async def test_a_plain_base_tool_is_guarded_on_every_path(make_guard: MakeGuard) -> None:
    guard = make_guard()
    ran: list[str] = []

    def body() -> str:
        ran.append("ran")
        return "done"

    tool = guard_tool(Echo(body), guard)
    assert tool("x").content == "done"
    assert tool.call("x").content == "done"  # type: ignore[attr-defined]
    assert (await tool.acall("x")).content == "done"  # type: ignore[attr-defined]
    guard.kill("tool", "lookup")
    with pytest.raises(PolicyViolationError):
        tool("x")
    with pytest.raises(PolicyViolationError):
        tool.call("x")  # type: ignore[attr-defined]
    with pytest.raises(PolicyViolationError):
        await tool.acall("x")  # type: ignore[attr-defined]
    assert ran == ["ran"] * 3


def test_an_error_output_counts_as_failed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    tool = guard_tool(Echo(lambda: "nope", is_error=True), guard)
    assert tool("x").is_error
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.failed) == (1, 1)


class TestContract(IntegrationContract):
    """A guarded tool keeps the integration contract through a real FunctionAgent run."""

    found_agent = None  # LlamaIndex does not tell a tool its agent

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        return guard_tool(lookup_tool(body), guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        if sync:
            return made.call(query="x")
        agent = FunctionAgent(tools=[made], llm=script(("lookup", {"query": "x"}, "c1")))
        return str(await stop_on_refusal(agent.run("look it up")))

    def undo(self, made: Any) -> Any:
        (original,) = unguard_tools([made])
        return original

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, ToolOutput):
            outcome = outcome.content
        if isinstance(outcome, str):
            return outcome if " refused: " in outcome else None
        return super().refusal(outcome)
