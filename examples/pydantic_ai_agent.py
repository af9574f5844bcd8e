"""Kill a Pydantic AI agent mid-run, then revive it and run again.

A refund agent (Pydantic AI's `FunctionModel` plays the model, no network) looks orders up and
refunds them through a guarded toolset. During the first refund the operator kills the agent:
the refund still in flight is stopped (recorded as CANCELLED), no other tool call starts, and
`Agent.run` raises the `PolicyViolationError` itself. After the revive the agent runs again. A
second toolset uses `on_block="message"`: its call is refused before the tool runs
(HARD_BLOCK), the model is told about the kill and answers instead of crashing.

    python examples/pydantic_ai_agent.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent, FunctionToolset
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import FunctionModel

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.pydantic_ai import guard_toolset

guard = Guard()


def lookup(order_id: str) -> str:
    """Look one order up."""
    return f"order {order_id}: $40, delivered"


def refund(order_id: str) -> str:
    """Refund one order."""
    print(f"  refunded {order_id}")
    if order_id == "A-1":
        guard.kill("agent", "refund-bot", reason="Refund loop on one ticket", actor="usr_ops")
        print("  operator: killed agent 'refund-bot'")
    return "refunded"


def scripted(*calls: tuple[str, str], answer: str) -> FunctionModel:
    """A model making these tool calls (tool, order id), one per turn, then answering."""
    turns = [
        ModelResponse(parts=[ToolCallPart(tool, {"order_id": order}, tool_call_id=f"call-{i}")])
        for i, (tool, order) in enumerate(calls, 1)
    ]
    turns.append(ModelResponse(parts=[TextPart(answer)]))
    return FunctionModel(lambda messages, info: turns.pop(0))


async def main() -> None:
    tools = guard_toolset(FunctionToolset([lookup, refund]), guard=guard)
    agent = Agent(name="refund-bot", toolsets=[tools])  # its name is the agent id

    print("run 1:")
    model = scripted(("lookup", "A-1"), ("refund", "A-1"), ("refund", "A-2"), answer="Done.")
    try:
        await agent.run("Refund A-1 and A-2", model=model, run_id="ticket-881")
    except PolicyViolationError as e:
        print(f"  PolicyViolationError from Agent.run: {e.target_type} {e.target_id!r}: {e.reason}")
    block = guard.interventions()[0]
    print(
        f"  {block.type} for {block.action!r} (agent {block.agent_id!r}, run {block.run_id!r}, "
        f"call {block.tool_call_id})"
    )
    counts = guard.counts("agent", "refund-bot")
    print(
        f"  refund-bot: executed={counts.executed} cancelled={counts.cancelled} "
        f"refused={counts.refused}"
    )

    guard.revive("agent", "refund-bot", actor="usr_ops")
    print("revived; run 2:")
    model = scripted(("refund", "A-2"), answer="Refunded A-2.")
    result = await agent.run("Refund A-2", model=model, run_id="ticket-882")
    print(f"  agent says: {result.output}")

    print("run 3 (on_block='message'):")
    guard.kill("run", "ticket-990", reason="Customer disputes the charge", actor="usr_ops")
    polite = Agent(
        name="refund-bot",
        toolsets=[guard_toolset(FunctionToolset([refund]), guard=guard, on_block="message")],
    )
    model = scripted(("refund", "B-1"), answer="I could not refund B-1: an operator stopped it.")
    result = await polite.run("Refund B-1", model=model, run_id="ticket-990")
    told = next(
        part.content
        for message in result.all_messages()
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    )
    print(f"  model was told: {told.split(' [intervention')[0]}")
    print(f"  agent says: {result.output}")
    kinds = ", ".join(str(iv.type) for iv in reversed(guard.interventions()))
    print(f"interventions recorded: {kinds}")


asyncio.run(main())
guard.close()
