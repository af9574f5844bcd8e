"""Kill an AutoGen agent mid-run in a team, then revive it and run again.

A `RoundRobinGroupChat` of two `AssistantAgent`s (AutoGen's `ReplayChatCompletionClient` plays
each model, no network): `refund_bot` refunds orders with tools, `notifier` writes to the
customer. `guard_agent` guards refund_bot's tools with its name as the agent id. During the
first refund the operator kills the agent: its next tool call is refused before the tool runs.
AutoGen hands every tool error to the model and goes on, so the team runs through
`stop_on_refusal`, which cancels the whole team at the refusal and raises the
`PolicyViolationError`. After the revive the agent runs again. A third agent uses
`on_block="message"`: the model reads the refusal as the tool's result and answers.

    python examples/autogen_agent.py
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.autogen import guard_agent, stop_on_refusal

# AutoGen's runtime logs the handler its cancellation interrupted (the team's manager, between
# two speakers) as an error with a traceback, and the replay model warns of what it ignores.
logging.getLogger("autogen_core").setLevel(logging.CRITICAL)
guard = Guard()
CAN_CALL_TOOLS = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def lookup(order_id: str) -> str:
    """Look one order up."""
    return f"order {order_id}: $40, delivered"


def refund(order_id: str) -> str:
    """Refund one order."""
    print(f"  refunded {order_id}")
    if order_id == "A-1":
        guard.kill("agent", "refund_bot", reason="Refund loop on one ticket", actor="usr_ops")
        print("  operator: killed agent 'refund_bot'")
    return "refunded"


def scripted(*turns: tuple[str, str] | str) -> ReplayChatCompletionClient:
    """A model making these tool calls (tool, order id), one per turn, or saying these texts."""
    results: list[CreateResult | str] = []
    for i, turn in enumerate(turns, 1):
        if isinstance(turn, str):
            results.append(turn)
            continue
        tool, order = turn
        call = FunctionCall(id=f"c{i}", name=tool, arguments=json.dumps({"order_id": order}))
        usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        results.append(
            CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False)
        )
    return ReplayChatCompletionClient(results, model_info=CAN_CALL_TOOLS)


def refund_bot(model: ReplayChatCompletionClient, **kwargs: Any) -> AssistantAgent:
    agent = AssistantAgent(
        "refund_bot", model_client=model, tools=[lookup, refund], reflect_on_tool_use=True
    )
    return guard_agent(agent, guard=guard, **kwargs)


async def main() -> None:
    print("run 1 (a team):")
    bot = refund_bot(scripted(("refund", "A-1"), "Refunded A-1.", ("refund", "A-2"), "done"))
    notifier = AssistantAgent("notifier", model_client=scripted("Customer told.", "Told again."))
    team = RoundRobinGroupChat([bot, notifier], termination_condition=MaxMessageTermination(9))
    try:
        with scope(run_id="ticket-881"):  # AutoGen has no run id of its own to take
            async for event in stop_on_refusal(team, task="Refund A-1 and A-2"):
                if isinstance(event, TextMessage) and event.source != "user":
                    print(f"  {event.source} says: {event.content}")
    except PolicyViolationError as e:
        print(f"  PolicyViolationError from the team: {e.target_type} {e.target_id!r}: {e.reason}")
    block = guard.interventions()[0]
    print(f"  {block.type} for {block.action!r} (agent {block.agent_id!r}, run {block.run_id!r})")
    counts = guard.counts("agent", "refund_bot")
    print(f"  refund_bot: executed={counts.executed} refused={counts.refused}")

    guard.revive("agent", "refund_bot", actor="usr_ops")
    print("revived; run 2:")
    bot = refund_bot(scripted(("refund", "A-2"), "Refunded A-2."))
    async for event in stop_on_refusal(bot, task="Refund A-2"):
        if isinstance(event, TaskResult):
            print(f"  agent says: {event.messages[-1].to_text()}")

    print("run 3 (on_block='message'):")
    guard.kill("tool", "refund", reason="Payment provider outage", actor="usr_ops")
    polite = refund_bot(scripted(("refund", "B-1"), "Refunds are paused."), on_block="message")
    async for event in stop_on_refusal(polite, task="Refund B-1"):
        if isinstance(event, ToolCallExecutionEvent):
            print(f"  model was told: {event.content[0].content.split(' [intervention')[0]}")
        elif isinstance(event, TaskResult):
            print(f"  agent says: {event.messages[-1].to_text()}")
    print(f"{len(guard.interventions())} HARD_BLOCK interventions recorded")


asyncio.run(main())
guard.close()
