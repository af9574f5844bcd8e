"""Kill an OpenAI Agents SDK agent mid-run.

A refund agent (the SDK's scripted test model, no network) issues refunds through a guarded
function tool. While the first refund is still in flight the operator kills the run: that call
is stopped (recorded as CANCELLED), the second refund never starts, and `Runner.run` raises the
`PolicyViolationError` itself. A second agent uses the kill-switch tool input guardrail with
`on_block="message"`: its tool call is refused (HARD_BLOCK), the model is told and answers.

    python examples/openai_agents_tools.py
"""

from __future__ import annotations

import asyncio

from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.openai_agents import guard_tools, kill_switch_guardrail

guard = Guard()


@function_tool
def refund(order_id: str) -> str:
    """Refund one order."""
    print(f"  refunded {order_id}")
    guard.kill("run", "ticket-881", reason="Refund loop on one ticket", actor="usr_ops")
    print("  operator: killed run 'ticket-881'")
    return "refunded"


@function_tool(tool_input_guardrails=[kill_switch_guardrail(guard, on_block="message")])
def escalate(reason: str) -> str:
    """Escalate to a human."""
    return "escalated"


async def main() -> None:
    model = ScriptedModel(
        [
            [function_call("refund", {"order_id": "A-1"}, call_id="call-1")],
            [function_call("refund", {"order_id": "A-2"}, call_id="call-2")],
            [assistant_message("All refunds done.")],
        ]
    )
    agent = Agent(name="refund-bot", model=model, tools=guard_tools([refund], guard=guard))
    run = RunConfig(group_id="ticket-881", tracing_disabled=True)
    print("run 1:")
    try:
        await Runner.run(agent, "Refund both orders", run_config=run)
    except PolicyViolationError as e:
        print(
            f"  Runner.run raised PolicyViolationError: {e.target_type} {e.target_id!r}: {e.reason}"
        )
    stopped = guard.interventions()[0]
    print(
        f"  {stopped.type} for {stopped.action!r} (agent {stopped.agent_id!r}, "
        f"call {stopped.tool_call_id}) after {stopped.ran_for_ms:.0f} ms"
    )

    print("run 2 (guardrail, on_block='message'):")
    model = ScriptedModel(
        [
            [function_call("escalate", {"reason": "angry customer"}, call_id="call-3")],
            [assistant_message("I could not escalate: this ticket was stopped by an operator.")],
        ]
    )
    agent = Agent(name="triage-bot", model=model, tools=[escalate])
    result = await Runner.run(agent, "Escalate", run_config=run)
    sent = [i["output"] for i in model.last_call.input if isinstance(i, dict) and "output" in i]
    print(f"  model was told: {sent[0].split(' [intervention')[0]}")
    print(f"  agent says: {result.final_output}")

    guard.revive("run", "ticket-881", actor="usr_ops")
    kinds = ", ".join(str(iv.type) for iv in reversed(guard.interventions()))
    print(f"revived; interventions recorded: {kinds}")


asyncio.run(main())
guard.close()
