"""Kill a smolagents agent mid-run, then revive it and run again.

A `ToolCallingAgent` (a scripted model, no network) refunds orders with `@tool` functions.
`guard_agent` guards its tools in place, with the agent's name as agent id. During the first
refund the operator kills the agent: its next tool call is refused before the tool runs, and
`agent.run` stops with the `PolicyViolationError` itself (smolagents would otherwise show the
error to the model and go on). After the revive the same agent runs again. A second agent uses
`on_block="message"`: the model reads the refusal as the tool's observation and answers.

    python examples/smolagents_agent.py
"""

from __future__ import annotations

from typing import Any

from smolagents import ToolCallingAgent, tool
from smolagents.memory import ActionStep
from smolagents.models import (
    ChatMessage,
    ChatMessageToolCall,
    ChatMessageToolCallFunction,
    MessageRole,
    Model,
)
from smolagents.monitoring import LogLevel

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.smolagents import guard_agent

guard = Guard()


class ScriptedModel(Model):
    """A model answering with these tool calls (tool, arguments), in order; no network."""

    def __init__(self, *calls: tuple[str, dict[str, Any]]) -> None:
        super().__init__(model_id="scripted")
        self.calls = list(calls)
        self.turn = 0

    def generate(self, messages: Any, **kwargs: Any) -> ChatMessage:
        name, arguments = self.calls.pop(0)
        self.turn += 1
        function = ChatMessageToolCallFunction(name=name, arguments=arguments)
        call = ChatMessageToolCall(function, id=f"call-{self.turn}", type="function")
        return ChatMessage(role=MessageRole.ASSISTANT, content="", tool_calls=[call])


@tool
def lookup(order_id: str) -> str:
    """Look one order up.

    Args:
        order_id: The order to look up.
    """
    return f"order {order_id}: $40, delivered"


@tool
def refund(order_id: str) -> str:
    """Refund one order.

    Args:
        order_id: The order to refund.
    """
    print(f"  refunded {order_id}")
    if order_id == "A-1":
        guard.kill("agent", "refund_bot", reason="Refund loop on one ticket", actor="usr_ops")
        print("  operator: killed agent 'refund_bot'")
    return "refunded"


model = ScriptedModel(
    ("lookup", {"order_id": "A-1"}),  # run 1
    ("refund", {"order_id": "A-1"}),  # run 1: refunded, then the operator kills the agent
    ("refund", {"order_id": "A-2"}),  # run 1: refused; the run ends here
    ("refund", {"order_id": "A-2"}),  # run 2, after the revive
    ("final_answer", {"answer": "Refunded A-2."}),
)
agent = ToolCallingAgent(
    tools=[lookup, refund], model=model, name="refund_bot", verbosity_level=LogLevel.OFF
)
guard_agent(agent, guard=guard)

print("run 1:")
try:
    agent.run("Refund A-1 and A-2", max_steps=5)
except PolicyViolationError as e:
    print(f"  PolicyViolationError from agent.run: {e.target_type} {e.target_id!r}: {e.reason}")
block = guard.interventions()[0]
print(f"  {block.type} for {block.action!r} (agent {block.agent_id!r})")
counts = guard.counts("agent", "refund_bot")
print(f"  refund_bot: executed={counts.executed} refused={counts.refused}")

guard.revive("agent", "refund_bot", actor="usr_ops")
print("revived; run 2:")
print(f"  agent says: {agent.run('Refund A-2', max_steps=2)}")

print("run 3 (on_block='message'):")
guard.kill("tool", "refund", reason="Payment provider outage", actor="usr_ops")
model = ScriptedModel(
    ("refund", {"order_id": "B-1"}), ("final_answer", {"answer": "Refunds are paused."})
)
polite = ToolCallingAgent(
    tools=[refund], model=model, name="support_bot", verbosity_level=LogLevel.OFF
)
guard_agent(polite, guard=guard, on_block="message")
answer = polite.run("Refund B-1", max_steps=2)
step = next(s for s in polite.memory.steps if isinstance(s, ActionStep))
print(f"  model was told: {(step.observations or '').split(' [intervention')[0]}")
print(f"  agent says: {answer}")
print(f"{len(guard.interventions())} HARD_BLOCK interventions recorded")
guard.close()
