"""Kill a LlamaIndex agent mid-run, then revive it and run again.

A `FunctionAgent` (LlamaIndex's `MockFunctionCallingLLM` plays the model, no network) refunds
orders with guarded tools. A tool is not told which agent calls it, so the agent's name is
given as `agent_id=`. During the first refund the operator kills the agent: the refund still in
flight is stopped (recorded as CANCELLED) and no other tool call starts. Agent workflows hand
every tool error to the model and go on, so the run is awaited through `stop_on_refusal`,
which ends it with the `PolicyViolationError`. After the revive the agent runs again. A second
agent uses `on_block="message"`: its call is refused (HARD_BLOCK), the model reads the refusal
as the tool's output and answers.

    python examples/llama_index_agent.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.llama_index import guard_tools, stop_on_refusal

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


def scripted(*calls: tuple[str, str]) -> MockFunctionCallingLLM:
    """A model making these tool calls (tool, order id), one per turn, then answering with
    the last tool output it was sent."""
    turns = iter(enumerate(calls, 1))

    def respond(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        turn = next(turns, None)
        if turn is None:
            outputs = [m.content for m in messages if m.role == MessageRole.TOOL]
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"Last tool said: {outputs[-1]}")
        i, (tool, order) = turn
        call = ToolCallBlock(tool_name=tool, tool_kwargs={"order_id": order}, tool_call_id=f"c{i}")
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])

    return MockFunctionCallingLLM(response_generator=respond)


async def main() -> None:
    tools = [FunctionTool.from_defaults(lookup), FunctionTool.from_defaults(refund)]
    guarded = guard_tools(tools, guard=guard, agent_id="refund-bot")

    print("run 1:")
    llm = scripted(("lookup", "A-1"), ("refund", "A-1"), ("refund", "A-2"))
    agent = FunctionAgent(name="refund-bot", tools=guarded, llm=llm)
    try:
        with scope(run_id="ticket-881"):  # LlamaIndex has no run id of its own to take
            await stop_on_refusal(agent.run("Refund A-1 and A-2"))
    except PolicyViolationError as e:
        print(f"  PolicyViolationError from the run: {e.target_type} {e.target_id!r}: {e.reason}")
    block = guard.interventions()[0]
    print(f"  {block.type} for {block.action!r} (agent {block.agent_id!r}, run {block.run_id!r})")
    counts = guard.counts("agent", "refund-bot")
    print(
        f"  refund-bot: executed={counts.executed} cancelled={counts.cancelled} "
        f"refused={counts.refused}"
    )

    guard.revive("agent", "refund-bot", actor="usr_ops")
    print("revived; run 2:")
    agent = FunctionAgent(name="refund-bot", tools=guarded, llm=scripted(("refund", "A-2")))
    print(f"  agent says: {await stop_on_refusal(agent.run('Refund A-2'))}")

    print("run 3 (on_block='message'):")
    guard.kill("tool", "refund", reason="Payment provider outage", actor="usr_ops")
    polite_tools = guard_tools(tools, guard=guard, on_block="message", agent_id="support-bot")
    polite = FunctionAgent(name="support-bot", tools=polite_tools, llm=scripted(("refund", "B-1")))
    answer = str(await polite.run("Refund B-1"))
    print(f"  agent says: {answer.split(' [intervention')[0]}")
    kinds = ", ".join(str(iv.type) for iv in reversed(guard.interventions()))
    print(f"interventions recorded: {kinds}")


asyncio.run(main())
guard.close()
