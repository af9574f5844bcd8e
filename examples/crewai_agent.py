"""Kill a CrewAI crew mid-run.

A refund crew (a scripted LLM, no network) refunds orders through a CrewAI tool. After the
first refund the operator kills the agent, by its role: the next tool call is refused before
the tool runs and `crew.kickoff()` raises the `PolicyViolationError`. A second run, with
`on_block="message"`, tells the model instead, and the model answers.

    python examples/crewai_agent.py   # needs "agentguard[crewai]"
"""

from __future__ import annotations

import json
import os
from typing import Any

# This example runs offline: no CrewAI telemetry or traces (set before CrewAI is imported).
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Task
from crewai.execution import clear_execution_uuid, set_execution_uuid
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.crewai import install, uninstall

guard = Guard()
refunded: list[str] = []


class ScriptedLLM(BaseLLM):
    """Stands in for a real model: replies with these turns, in order (tool calls or text)."""

    turns: list[Any]
    told: list[str] = []  # the tool results it was sent on its last turn

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.told = [m["content"] for m in messages if m.get("role") == "tool"]
        return self.turns.pop(0)

    def supports_function_calling(self) -> bool:
        return True

    def get_input_tokens_count(self, messages: Any, tools: Any = None, **kwargs: Any) -> int:
        return 1


def refund_call(order_id: str, call_id: str) -> list[dict[str, Any]]:
    arguments = json.dumps({"order_id": order_id})
    return [
        {"id": call_id, "type": "function", "function": {"name": "refund", "arguments": arguments}}
    ]


@tool("refund")
def refund(order_id: str) -> str:
    """Refund one order."""
    refunded.append(order_id)
    print(f"  refunded {order_id}")
    guard.kill("agent", "Refund Agent", reason="Refund loop on one ticket", actor="usr_ops")
    print("  operator: killed agent 'Refund Agent'")
    return "refunded"


def refund_crew(*turns: Any) -> tuple[Crew, ScriptedLLM]:
    llm = ScriptedLLM(model="scripted", turns=list(turns))
    agent = Agent(
        role="Refund Agent",
        goal="Refund the orders.",
        backstory="Billing.",
        tools=[refund],
        llm=llm,
    )
    task = Task(
        description="Refund A-1 and A-2.", expected_output="What was refunded.", agent=agent
    )
    return Crew(agents=[agent], tasks=[task]), llm


install(guard)  # every CrewAI agent's tool calls, in this process
run = set_execution_uuid("ticket-881")  # the run id (CrewAI makes one per kickoff otherwise)
print("run 1 (on_block='raise'):")
crew, _ = refund_crew(refund_call("A-1", "call-1"), refund_call("A-2", "call-2"), "Done.")
try:
    crew.kickoff()
except PolicyViolationError as e:
    print(
        f"  crew.kickoff() raised PolicyViolationError: {e.target_type} {e.target_id!r}: {e.reason}"
    )
block = guard.interventions()[0]
print(f"  {block.type} for {block.action!r} (agent {block.agent_id!r}, run {block.run_id!r})")
clear_execution_uuid(run)

print("run 2 (on_block='message'):")
install(guard, on_block="message")  # installing again changes the settings
crew, llm = refund_crew(
    refund_call("A-3", "call-3"), "I was stopped by an operator, so I refunded nothing."
)
result = crew.kickoff()
print(f"  model was told: {llm.told[0].split(' [intervention')[0]}")
print(f"  crew says: {result.raw}")

guard.revive("agent", "Refund Agent", actor="usr_ops")
uninstall()
print(f"revived; {len(guard.interventions())} HARD_BLOCK interventions; refunded {refunded}")
guard.close()
