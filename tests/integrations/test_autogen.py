"""AutoGen AgentChat: guarded tools, workbenches and agents, driven by real AssistantAgent and
RoundRobinGroupChat runs with ReplayChatCompletionClient (a scripted model; no network)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.tools import AgentTool
from autogen_agentchat.ui import Console
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import (
    BaseTool,
    FunctionTool,
    StaticStreamWorkbench,
    StaticWorkbench,
    StreamTool,
    Workbench,
)
from autogen_ext.models.replay import ReplayChatCompletionClient
from integration_contract import Body, IntegrationContract

from agentguard import Guard, InvalidInputError, PolicyViolationError, scope
from agentguard.integrations.autogen import (
    GuardedStreamTool,
    GuardedTool,
    GuardedWorkbench,
    guard_agent,
    guard_tool,
    guard_tools,
    guard_workbench,
    stop_on_refusal,
    unguard_agent,
    unguard_tools,
    unguard_workbench,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard

TOOL_MODEL = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def calls(*made: tuple[str, dict[str, Any], str]) -> CreateResult:
    """A model turn making these tool calls (name, args, call id)."""
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=i, name=n, arguments=json.dumps(a)) for n, a, i in made],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


def model(*turns: CreateResult | str) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(turns), model_info=TOOL_MODEL)


def lookup_tool(body: Body) -> FunctionTool:
    def lookup(query: str) -> str:
        """Look something up."""
        return body()

    return FunctionTool(lookup, description="Look something up.")


def mailer_tool(guard: Guard, sent: list[str], *, kill: bool) -> FunctionTool:
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        if kill:
            guard.kill("agent", "mailer", reason="Broken link in template", actor="usr_abc")
        return "sent"

    return FunctionTool(send_email, description="Send an email.")


def mail(to: str, call_id: str) -> CreateResult:
    return calls(("send_email", {"to": to}, call_id))


async def events(runner: Any, task: str = "go", **kwargs: Any) -> list[Any]:
    """Every event of a ``stop_on_refusal`` run."""
    return [event async for event in stop_on_refusal(runner, task=task, **kwargs)]


def executions(seen: list[Any]) -> list[tuple[str, bool]]:
    """(content, is_error) of every tool result the run showed."""
    return [
        (result.content, result.is_error)
        for event in seen
        if isinstance(event, ToolCallExecutionEvent)
        for result in event.content
    ]


# -- the tool, as AutoGen sees it ------------------------------------------------------------


async def test_a_guarded_tool_keeps_its_type_name_and_schema(make_guard: MakeGuard) -> None:
    plain = lookup_tool(lambda: "done")
    (guarded,) = guard_tools([plain], guard=make_guard())
    assert isinstance(guarded, GuardedTool) and isinstance(guarded, FunctionTool)
    assert not isinstance(guarded, StreamTool)  # a plain tool is not made a stream tool
    assert (guarded.name, guarded.description) == (plain.name, plain.description)
    assert guarded.schema == plain.schema and guarded.args_type() is plain.args_type()
    assert guard_tool(guarded) is guarded  # guarding twice is guarding once
    assert unguard_tools([guarded, plain]) == [plain, plain]


async def test_the_model_sees_the_same_tools_guarded_and_plain(make_guard: MakeGuard) -> None:
    seen = []
    for guarded in (False, True):
        tool = lookup_tool(lambda: "done")
        client = model("nothing to do")
        agent = AssistantAgent("mailer", model_client=client, tools=[tool])
        if guarded:
            guard_agent(agent, guard=make_guard())
        await agent.run(task="go")
        seen.append(client.create_calls[0]["tools"])
    assert seen[0] == seen[1] and seen[0][0]["name"] == "lookup"


def test_bad_input_names_the_field(make_guard: MakeGuard) -> None:
    with pytest.raises(InvalidInputError, match="tool"):
        guard_tool(lambda: None, make_guard())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="workbench"):
        guard_workbench([], make_guard())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="agent"):
        guard_agent(object(), make_guard())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_block"):
        guard_tool(lookup_tool(lambda: ""), make_guard(), on_block="stop")  # type: ignore[arg-type]


# -- a killed agent, in a real AssistantAgent run --------------------------------------------


async def test_raise_stop_on_refusal_ends_the_run_before_the_body(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []
    agent = AssistantAgent(
        "mailer",
        model_client=model(mail("a@x.com", "c1"), mail("b@x.com", "c2"), mail("c@x.com", "c3")),
        tools=[mailer_tool(guard, sent, kill=True)],
        max_tool_iterations=3,
    )
    guard_agent(agent, guard=guard)
    seen: list[Any] = []
    with pytest.raises(PolicyViolationError) as caught:
        async for event in stop_on_refusal(agent, task="mail everyone"):
            seen.append(event)
    assert sent == ["a@x.com"]  # the second call never reached the body, no third was made
    assert caught.value.reason == "Broken link in template"
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.tool_call_id) == ("send_email", "mailer", "c2")
    assert caught.value.intervention_id == block.id
    assert executions(seen) == [("sent", False)]  # the refused result is not passed on
    assert not any(isinstance(event, TaskResult) for event in seen)
    counts = guard.counts(action="send_email")
    assert (counts.executed, counts.refused) == (1, 1)


async def test_raise_without_stop_on_refusal_the_model_is_told(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    client = model(mail("a@x.com", "c1"), mail("b@x.com", "c2"), "I was stopped.")
    agent = AssistantAgent(
        "mailer",
        model_client=client,
        tools=[mailer_tool(guard, sent, kill=True)],
        max_tool_iterations=3,
    )
    guard_agent(agent, guard=guard)
    result = await agent.run(task="mail everyone")  # AutoGen's own run: nothing stops it
    assert sent == ["a@x.com"]
    (done, (text, is_error)) = executions(result.messages)
    assert done == ("sent", False)
    assert is_error and "agent 'mailer' was killed by usr_abc" in text
    assert isinstance(result.messages[-1], TextMessage)
    assert result.messages[-1].content == "I was stopped."
    told = client.create_calls[2]["messages"][-1].content[0]  # the model read the refusal
    assert told.is_error and "Broken link in template" in told.content


async def test_a_refusal_from_a_tool_guarded_alone_ends_the_run_too(
    make_guard: MakeGuard, cancellation: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []
    tools = guard_tools([mailer_tool(guard, sent, kill=True)], guard=guard, agent_id="mailer")
    agent = AssistantAgent(
        "mailer",
        model_client=model(mail("a@x.com", "c1"), mail("b@x.com", "c2")),
        tools=tools,
        max_tool_iterations=2,
    )
    with pytest.raises(PolicyViolationError, match="Broken link"):
        await events(agent)
    assert sent == ["a@x.com"]
    # The kill came while the first call was in flight: that call was stopped, and the run with it.
    assert cancellation(guard).agent_id == "mailer"


async def test_on_block_message_tells_the_model_and_the_run_goes_on(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("agent", "mailer", reason="spam wave", actor="usr_ops")
    client = model(mail("a@x.com", "c1"), "Nothing was sent.")
    agent = AssistantAgent(
        "mailer",
        model_client=client,
        tools=[mailer_tool(guard, sent, kill=False)],
        reflect_on_tool_use=True,
    )
    guard_agent(agent, guard=guard, on_block="message")
    seen = await events(agent)  # an answered refusal does not stop the run
    assert sent == []
    ((text, is_error),) = executions(seen)
    assert is_error and text.startswith("Error: 'send_email' refused: agent 'mailer' was killed")
    assert "spam wave" in text
    assert seen[-1].messages[-1].content == "Nothing was sent."
    assert hard_block(guard).agent_id == "mailer"


async def test_a_tool_in_message_mode_answers_with_its_result(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup", reason="quota", actor="usr_ops")
    (tool,) = guard_tools([lookup_tool(lambda: "done")], guard=guard, on_block="message")
    answer = await tool.run_json({"query": "x"}, CancellationToken(), call_id="c1")
    assert tool.return_value_as_string(answer).startswith("Error: 'lookup' refused: tool")


async def test_run_ids_come_from_agentguard_scope(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("run", "campaign-7", reason="over budget")
    agent = AssistantAgent(
        "mailer",
        model_client=model(mail("a@x.com", "c1")),
        tools=[mailer_tool(guard, sent, kill=False)],
    )
    guard_agent(agent, guard=guard)
    with scope(run_id="campaign-7", mission_id="spring"), pytest.raises(PolicyViolationError):
        await events(agent)
    assert sent == []
    (block,) = guard.interventions()
    assert (block.agent_id, block.run_id, block.mission_id) == ("mailer", "campaign-7", "spring")


async def test_fixed_ids_win_over_the_agent_name(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup")
    agent = AssistantAgent(
        "mailer",
        model_client=model(calls(("lookup", {"query": "x"}, "c1"))),
        tools=[lookup_tool(lambda: "done")],
    )
    guard_agent(agent, guard=guard, agent_id="fixed", run_id="r-1")
    with pytest.raises(PolicyViolationError):
        await events(agent)
    (block,) = guard.interventions()
    assert (block.agent_id, block.run_id) == ("fixed", "r-1")


async def test_a_tool_guarded_alone_and_through_its_agent_is_checked_once(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    tools = guard_tools([lookup_tool(lambda: "done")], guard=guard)
    agent = AssistantAgent(
        "mailer", model_client=model(calls(("lookup", {"query": "x"}, "c1"))), tools=tools
    )
    guard_agent(agent, guard=guard)
    await events(agent)
    assert guard.counts(action="lookup").executed == 1


async def test_unguard_agent_gives_back_its_workbenches(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup")
    ran: list[str] = []
    agent = AssistantAgent(
        "mailer",
        model_client=model(calls(("lookup", {"query": "x"}, "c1")), "ok"),
        tools=[lookup_tool(lambda: ran.append("ran") or "done")],
    )
    before = list(agent._workbench)  # noqa: SLF001
    assert guard_agent(guard_agent(agent, guard=guard), guard=guard) is agent
    assert all(isinstance(wb, GuardedWorkbench) for wb in agent._workbench)  # noqa: SLF001
    assert unguard_agent(agent) is agent
    assert list(agent._workbench) == before  # noqa: SLF001
    await events(agent)
    assert ran == ["ran"] and guard.interventions() == []


# -- stream tools (an agent as a tool) --------------------------------------------------------


async def test_an_agent_tool_is_refused_before_its_agent_runs(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    inner_client = model("researched")
    inner = AssistantAgent("researcher", model_client=inner_client, description="Researches.")
    (tool,) = guard_tools([AgentTool(inner)], guard=guard, on_block="message")
    assert isinstance(tool, GuardedStreamTool) and isinstance(tool, AgentTool)
    outer = AssistantAgent(
        "lead",
        model_client=model(*(calls(("researcher", {"task": t}, t)) for t in ("c1", "c2"))),
        tools=[tool],
    )
    first = await events(outer)
    assert executions(first) == [("researcher: researched", False)]
    guard.kill("tool", "researcher", reason="looping", actor="usr_ops")
    seen = await events(outer)
    ((text, _),) = executions(seen)
    assert text.startswith("Error: 'researcher' refused: tool 'researcher' was killed")
    assert len(inner_client.create_calls) == 1  # the inner agent never ran again
    assert hard_block(guard).action == "researcher"


async def test_a_stream_tool_in_raise_mode_ends_the_run(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "researcher")
    inner_client = model("researched")
    inner = AssistantAgent("researcher", model_client=inner_client, description="Researches.")
    outer = AssistantAgent(
        "lead",
        model_client=model(calls(("researcher", {"task": "x"}, "c1"))),
        tools=guard_tools([AgentTool(inner)], guard=guard),
    )
    with pytest.raises(PolicyViolationError):
        await events(outer)
    assert inner_client.create_calls == []


# -- workbenches ------------------------------------------------------------------------------


async def test_a_guarded_workbench_lists_the_same_tools(make_guard: MakeGuard) -> None:
    plain = StaticStreamWorkbench([lookup_tool(lambda: "done")])
    guarded = guard_workbench(plain, guard=make_guard())
    assert isinstance(guarded, StaticStreamWorkbench) and isinstance(guarded, Workbench)
    assert await guarded.list_tools() == await plain.list_tools()
    assert guard_workbench(guarded) is guarded
    assert unguard_workbench(guarded) is plain and unguard_workbench(plain) is plain


async def test_a_workbench_called_directly_answers_a_refusal_with_an_error_result(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup", reason="quota", actor="usr_ops")
    for on_block in ("raise", "message"):
        wb = guard_workbench(
            StaticWorkbench([lookup_tool(lambda: "done")]), guard, on_block=on_block
        )  # type: ignore[arg-type]
        result = await wb.call_tool("lookup", {"query": "x"})
        assert result.is_error and "tool 'lookup' was killed by usr_ops" in result.to_text()


async def test_a_workbench_error_result_counts_as_failed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    wb = guard_workbench(StaticWorkbench([]), guard)
    result = await wb.call_tool("missing", {})  # StaticWorkbench answers "not found"
    assert result.is_error
    counts = guard.counts(action="missing")
    assert (counts.executed, counts.failed) == (1, 1)


# -- a team -----------------------------------------------------------------------------------


def team(guard: Guard, sent: list[str], other: ReplayChatCompletionClient) -> RoundRobinGroupChat:
    mailer = AssistantAgent(
        "mailer",
        model_client=model(mail("a@x.com", "c1"), mail("b@x.com", "c2"), mail("c@x.com", "c3")),
        tools=[mailer_tool(guard, sent, kill=True)],
    )
    guard_agent(mailer, guard=guard)
    writer = AssistantAgent("writer", model_client=other)
    return RoundRobinGroupChat([mailer, writer], termination_condition=MaxMessageTermination(8))


async def test_a_refusal_stops_the_whole_team(make_guard: MakeGuard, hard_block: HardBlock) -> None:
    guard = make_guard()
    sent: list[str] = []
    other = model("draft 1", "draft 2", "draft 3")
    chat = team(guard, sent, other)
    token = CancellationToken()
    with pytest.raises(PolicyViolationError, match="Broken link in template"):
        await events(chat, cancellation_token=token)
    assert token.is_cancelled()
    assert sent == ["a@x.com"]
    assert len(other.create_calls) == 1  # the writer never spoke after the refusal
    block = hard_block(guard)
    assert (block.agent_id, block.tool_call_id) == ("mailer", "c2")
    guard.revive("agent", "mailer")
    more = [event async for event in chat.run_stream(task="go on")]  # the team runs again
    assert isinstance(more[-1], TaskResult) and sent == ["a@x.com", "c@x.com"]


async def test_a_team_in_message_mode_goes_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    mailer = AssistantAgent(
        "mailer",
        model_client=model(mail("a@x.com", "c1"), mail("b@x.com", "c2")),
        tools=[mailer_tool(guard, sent, kill=False)],
    )
    guard_agent(mailer, guard=guard, on_block="message")
    writer = AssistantAgent("writer", model_client=model("draft 1", "draft 2"))
    chat = RoundRobinGroupChat([mailer, writer], termination_condition=MaxMessageTermination(5))
    guard.kill("agent", "mailer")
    with scope(run_id="team-run"):
        seen = await events(chat)
    assert sent == []
    assert [is_error for _, is_error in executions(seen)] == [True, True]
    assert isinstance(seen[-1], TaskResult) and seen[-1].messages[-1].content == "draft 2"
    assert {(b.agent_id, b.run_id) for b in guard.interventions()} == {("mailer", "team-run")}


# -- the contract -----------------------------------------------------------------------------


async def through_an_agent(**tools: Any) -> Any:
    """Run a real AssistantAgent (``tools=`` or ``workbench=``) calling lookup once; what the
    tool call gave the model (a refusal in raise mode is raised by stop_on_refusal)."""
    agent = AssistantAgent(
        "lookup_bot", model_client=model(calls(("lookup", {"query": "x"}, "c1"))), **tools
    )
    ((content, _),) = executions(await events(agent))
    return content


class TestContract(IntegrationContract):
    """A guarded tool keeps the integration contract through a real AssistantAgent run."""

    sync_path = False  # AutoGen runs tools only from asyncio
    found_agent = None  # a tool is not told its agent

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        return guard_tool(lookup_tool(body), guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        return await through_an_agent(tools=[made])

    def undo(self, made: Any) -> Any:
        (original,) = unguard_tools([made])
        assert isinstance(original, BaseTool) and not isinstance(original, GuardedTool)
        return original

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if " refused: " in outcome else None
        return super().refusal(outcome)


class TestWorkbenchContract(TestContract):
    """A guarded workbench keeps the contract too."""

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        plain = StaticStreamWorkbench([lookup_tool(body)])
        return guard_workbench(plain, guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        return await through_an_agent(workbench=made)

    def undo(self, made: Any) -> Any:
        return unguard_workbench(made)


class TestAgentContract(TestContract):
    """``guard_agent`` keeps the contract, with the agent's name as its agent id."""

    found_agent = "lookup_bot"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        agent = AssistantAgent(
            "lookup_bot",
            model_client=model(*[calls(("lookup", {"query": "x"}, "c1"))] * 4),
            tools=[lookup_tool(body)],
        )
        return guard_agent(agent, guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        ((content, _),) = executions(await events(made))
        return content

    def undo(self, made: Any) -> Any:
        return unguard_agent(made)


async def test_guard_agent_guards_a_workbench_passed_to_the_agent(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    ran: list[str] = []
    own = StaticWorkbench([lookup_tool(lambda: ran.append("ran") or "done")])  # call_tool path
    agent = AssistantAgent(
        "researcher",
        model_client=model(*[calls(("lookup", {"query": "x"}, "c1"))] * 2),
        workbench=own,
    )
    guard_agent(agent, guard=guard)
    assert executions(await events(agent)) == [("done", False)]
    guard.kill("agent", "researcher")
    with pytest.raises(PolicyViolationError):
        await events(agent)
    assert ran == ["ran"] and hard_block(guard).agent_id == "researcher"


async def test_console_shows_a_stop_on_refusal_run(make_guard: MakeGuard) -> None:
    guard = make_guard()
    agent = AssistantAgent(
        "mailer",
        model_client=model(*[calls(("lookup", {"query": "x"}, "c1"))] * 2),
        tools=[lookup_tool(lambda: "done")],
    )
    guard_agent(agent, guard=guard)
    result = await Console(stop_on_refusal(agent, task="go"))
    assert isinstance(result, TaskResult) and result.messages[-1].to_text() == "done"
    guard.kill("agent", "mailer")
    with pytest.raises(PolicyViolationError):
        await Console(stop_on_refusal(agent, task="go"))


async def test_a_call_made_inside_an_admitted_tool_is_checked_again(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("agent", "inner")
    inner = guard_tool(lookup_tool(lambda: "inner ran"), guard, agent_id="inner")

    async def lookup(query: str) -> str:
        """Look something up, through another tool of the same name and the same call id."""
        return str(await inner.run_json({"query": query}, CancellationToken(), call_id="c1"))

    (outer,) = guard_tools([FunctionTool(lookup, description="Look.")], guard=guard)
    workbench = guard_workbench(StaticWorkbench([outer]), guard, agent_id="outer")
    result = await workbench.call_tool("lookup", {"query": "x"}, call_id="c1")
    assert result.is_error and "agent 'inner' was killed" in result.to_text()
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 1)
