"""OpenAI Agents SDK: guarded function tools and the kill-switch tool input guardrail.

The model is the SDK's own scripted test double, so nothing touches the network.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from agents import Agent, FunctionTool, RunConfig, Runner, WebSearchTool, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from integration_contract import Body, IntegrationContract

from agentguard import Guard, InterventionType, InvalidInputError, PolicyViolationError
from agentguard.integrations.openai_agents import (
    AgentsPolicyViolationError,
    GuardedInvoker,
    guard_tool,
    guard_tools,
    kill_switch_guardrail,
    unguard_tools,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

RUN = RunConfig(group_id="conv-7", tracing_disabled=True)


def script(*steps: tuple[str, dict[str, Any], str] | str) -> ScriptedModel:
    """A model answering with these tool calls (name, args, call id), or final texts, in order."""
    return ScriptedModel(
        [
            [assistant_message(step)]
            if isinstance(step, str)
            else [function_call(step[0], step[1], call_id=step[2])]
            for step in steps
        ]
    )


def tool_outputs(model: ScriptedModel) -> list[str]:
    """The tool outputs the model was sent on its last call."""
    items = model.last_call.input if model.last_call else []
    return [
        item["output"]
        for item in items
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]


@function_tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"found {query}"


def test_guarded_tool_keeps_type_and_schema(make_guard: MakeGuard) -> None:
    guarded = guard_tool(lookup, guard=make_guard())
    assert type(guarded) is FunctionTool
    assert (guarded.name, guarded.description) == (lookup.name, lookup.description)
    assert guarded.params_json_schema == lookup.params_json_schema
    assert guarded.strict_json_schema == lookup.strict_json_schema
    assert guarded.__wrapped__ is lookup.__wrapped__  # the decorated Python function
    assert isinstance(guarded.on_invoke_tool, GuardedInvoker)
    assert isinstance(guarded.on_invoke_tool, type(lookup.on_invoke_tool))
    assert not isinstance(lookup.on_invoke_tool, GuardedInvoker)  # the original is untouched


async def test_agent_killed_mid_run_surfaces_the_error_from_runner_run(
    make_guard: MakeGuard, spans: Spans, cancellation: HardBlock
) -> None:
    guard = make_guard()
    sent: list[str] = []

    @function_tool
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        if len(sent) == 1:  # the operator kills the agent while the first email goes out
            guard.kill("agent", "email-bot", reason="Broken link in template", actor="usr_abc")
        return "sent"

    model = script(
        ("send_email", {"to": "a@x.com"}, "c1"), ("send_email", {"to": "b@x.com"}, "c2"), "done"
    )
    agent = Agent(name="email-bot", model=model, tools=guard_tools([send_email], guard=guard))
    with spans.tracer.start_as_current_span("invoke_agent email-bot") as agent_span:
        with pytest.raises(PolicyViolationError) as caught:
            await Runner.run(agent, "mail everyone", run_config=RUN)

    error = caught.value
    assert sent == ["a@x.com"]  # the second call never reached the body
    assert isinstance(error, AgentsPolicyViolationError)  # not wrapped in the SDK's UserError
    assert error.reason == "Broken link in template" and error.killed_by == "usr_abc"
    assert error.run_data is not None  # the SDK attached the run's details
    # The kill came while the first call was in flight: that call was stopped, and the run with it.
    stopped = cancellation(guard)
    assert (stopped.action, stopped.agent_id, stopped.run_id, stopped.tool_call_id) == (
        "send_email",
        "email-bot",
        "conv-7",
        "c1",
    )
    assert error.intervention_id == stopped.id and error.cancelled
    span = spans.one_block("execute_tool send_email", "send_email", "CANCELLED")
    assert span.parent.span_id == agent_span.get_span_context().span_id

    guard.revive("agent", "email-bot")
    again = Agent(
        name="email-bot",
        model=script(("send_email", {"to": "c@x.com"}, "c3"), "done"),
        tools=guard_tools([send_email], guard=guard),
    )
    assert (await Runner.run(again, "resume", run_config=RUN)).final_output == "done"
    assert sent == ["a@x.com", "c@x.com"]


async def test_on_block_message_tells_the_model_and_the_run_goes_on(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    guard.kill("run", "conv-7", reason="customer opted out", actor="usr_ops")
    model = script(("lookup", {"query": "order 1"}, "c1"), "Sorry, I was stopped.")
    agent = Agent(
        name="support-bot",
        model=model,
        tools=guard_tools([lookup], guard=guard, on_block="message"),
    )

    result = await Runner.run(agent, "where is my order?", run_config=RUN)
    assert result.final_output == "Sorry, I was stopped."
    (output,) = tool_outputs(model)
    assert "run 'conv-7' was killed by usr_ops" in output and "customer opted out" in output
    assert hard_block(guard).target_type == "run"


async def test_guardrail_raise_and_message(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    ran: list[str] = []

    def make_tool(on_block: str) -> FunctionTool:
        @function_tool(tool_input_guardrails=[kill_switch_guardrail(guard, on_block=on_block)])
        def refund(order_id: str) -> str:
            """Refund an order."""
            ran.append(order_id)
            return "refunded"

        return refund

    allowed = Agent(
        name="bot",
        model=script(("refund", {"order_id": "1"}, "c1"), "ok"),
        tools=[make_tool("raise")],
    )
    assert (await Runner.run(allowed, "refund", run_config=RUN)).final_output == "ok"

    guard.kill("tool", "refund", reason="fraud review")
    raising = Agent(
        name="bot",
        model=script(("refund", {"order_id": "2"}, "c2"), "ok"),
        tools=[make_tool("raise")],
    )
    with pytest.raises(PolicyViolationError, match="fraud review"):
        await Runner.run(raising, "refund", run_config=RUN)

    model = script(("refund", {"order_id": "3"}, "c3"), "cannot refund")
    polite = Agent(name="bot", model=model, tools=[make_tool("message")])
    assert (await Runner.run(polite, "refund", run_config=RUN)).final_output == "cannot refund"
    assert "fraud review" in tool_outputs(model)[0]

    assert ran == ["1"]
    blocks = guard.interventions()
    assert [(b.action, b.tool_call_id, b.agent_id, b.run_id) for b in reversed(blocks)] == [
        ("refund", "c2", "bot", "conv-7"),
        ("refund", "c3", "bot", "conv-7"),
    ]
    assert len(spans.blocks()) == 2


async def test_sdk_copies_of_a_guarded_tool_stay_guarded(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guarded = guard_tool(lookup, guard=guard)
    copied = copy.copy(guarded)
    assert isinstance(copied.on_invoke_tool, GuardedInvoker)
    guard.kill("tool", "lookup")
    agent = Agent(name="bot", model=script(("lookup", {"query": "x"}, "c1"), "ok"), tools=[copied])
    with pytest.raises(PolicyViolationError):
        await Runner.run(agent, "look", run_config=RUN)


def test_guarding_is_idempotent_and_reversible(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guarded = guard_tools([lookup], guard=guard)
    assert guard_tools(guarded, guard=guard)[0] is guarded[0]
    assert unguard_tools(guarded) == [lookup] and unguard_tools(guarded)[0] is lookup
    with pytest.raises(InvalidInputError, match="hosted tools"):
        guard_tool(WebSearchTool(), guard=guard)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_block"):
        kill_switch_guardrail(guard, on_block="ignore")  # type: ignore[arg-type]


def test_the_error_still_pickles_as_a_policy_violation(make_guard: MakeGuard) -> None:
    import pickle

    guard = make_guard()
    guard.kill("tool", "lookup", reason="r")
    invoker = guard_tool(lookup, guard=guard).on_invoke_tool

    class Ctx:
        tool_name, tool_call_id, tool_arguments = "lookup", "c1", json.dumps({"query": "x"})

    import asyncio

    with pytest.raises(AgentsPolicyViolationError) as caught:
        asyncio.run(invoker(Ctx(), Ctx.tool_arguments))
    restored = pickle.loads(pickle.dumps(caught.value))
    assert type(restored) is PolicyViolationError and str(restored) == str(caught.value)


class TestContract(IntegrationContract):
    """Guarded function tools keep the integration contract; the agent's name is its id."""

    sync_path = False  # Runner.run_sync cannot run inside the test's event loop
    found_agent = "oa-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        # failure_error_function=None: the SDK lets a tool's exception out instead of telling
        # the model, so the guard sees the failure (see the module docstring)
        @function_tool(failure_error_function=None)
        def lookup(query: str) -> str:
            """Look something up."""
            return body()

        return guard_tools([lookup], guard=guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        model = script(("lookup", {"query": "x"}, "c1"), "done")
        agent = Agent(name="oa-agent", model=model, tools=made)
        await Runner.run(agent, "look it up", run_config=RUN)
        return tool_outputs(model)

    def undo(self, made: Any) -> Any:
        return unguard_tools(made)

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, list):
            return next((o for o in outcome if " refused: " in o), None)
        return super().refusal(outcome)


class TestGuardrailContract(TestContract):
    """The tool input guardrail keeps the contract too (undo: the tool without it)."""

    sees_the_body = False

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        guardrail = kill_switch_guardrail(guard, on_block=on_block or "raise", **ids)

        @function_tool(failure_error_function=None, tool_input_guardrails=[guardrail])
        def lookup(query: str) -> str:
            """Look something up."""
            return body()

        return [lookup]

    def undo(self, made: Any) -> Any:
        return [dataclasses.replace(made[0], tool_input_guardrails=[])]


# -- a kill while a tool runs -----------------------------------------------------------------


def kill_when_started(guard: Guard, started: threading.Event) -> None:
    """Kill the agent from another thread (as a remote guard's feed does) once a tool runs."""

    def kill() -> None:
        assert started.wait(10)
        guard.kill("agent", "email-bot", reason="Broken link in template", actor="usr_abc")

    threading.Thread(target=kill, daemon=True).start()


@pytest.mark.parametrize("on_block", ["raise", "message"])
async def test_a_run_whose_tool_is_stopped_ends_or_tells_the_model(
    make_guard: MakeGuard, on_block: str
) -> None:
    guard = make_guard()
    started = threading.Event()

    @function_tool
    async def bulk_send(batch: int) -> str:
        """Send a batch of emails."""
        started.set()
        await asyncio.sleep(30)
        return "sent"

    model = script(("bulk_send", {"batch": 1}, "c1"), "Stopped by the operator.")
    tools = guard_tools([bulk_send], guard=guard, on_block=on_block)  # type: ignore[arg-type]
    agent = Agent(name="email-bot", model=model, tools=tools)
    kill_when_started(guard, started)
    begun = time.monotonic()
    if on_block == "raise":
        with pytest.raises(AgentsPolicyViolationError) as caught:
            await Runner.run(agent, "mail everyone", run_config=RUN)
        assert caught.value.cancelled and caught.value.reason == "Broken link in template"
    else:
        result = await Runner.run(agent, "mail everyone", run_config=RUN)
        [told] = tool_outputs(model)
        assert "'bulk_send' stopped after" in told and "agent 'email-bot' was killed" in told
        assert result.final_output == "Stopped by the operator."
    assert time.monotonic() - begun < 10
    [stopped] = guard.interventions()
    assert stopped.type is InterventionType.CANCELLED
    assert (stopped.action, stopped.tool_call_id, stopped.run_id) == ("bulk_send", "c1", "conv-7")
    counts = guard.counts("agent", "email-bot")
    assert (counts.executed, counts.cancelled, counts.failed) == (1, 1, 0)


async def test_an_opted_out_tool_runs_to_its_end(make_guard: MakeGuard) -> None:
    guard = make_guard()
    started = threading.Event()

    @function_tool
    async def settle(batch: int) -> str:
        """Settle the ledger."""
        started.set()
        await asyncio.sleep(0.3)
        return "settled"

    model = script(("settle", {"batch": 1}, "c1"), "done")
    tools = guard_tools([settle], guard=guard, cancel_in_flight=False)
    kill_when_started(guard, started)
    result = await Runner.run(
        Agent(name="email-bot", model=model, tools=tools), "go", run_config=RUN
    )
    assert result.final_output == "done" and tool_outputs(model) == ["settled"]
    assert guard.interventions() == []
