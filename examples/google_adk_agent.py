"""Kill a Google ADK agent mid-run.

A refund agent (a scripted model, no network, no Google credentials) issues refunds through a
plain function tool on a guarded `InMemoryRunner`. After the first refund the operator kills
the session's run: the next tool call is refused before the tool runs and `run_async` raises
the `PolicyViolationError` itself. A second runner guards with `on_block="message"`: the
model reads the refusal as the tool's response and answers. A revive lets a new turn refund.

    python examples/google_adk_agent.py
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import types

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.google_adk import guard_runner

# ADK logs the exception that ends a run (here, the refusal) with its traceback at ERROR.
logging.getLogger("google_adk").setLevel(logging.CRITICAL)

guard = Guard()


def refund(order_id: str) -> str:
    """Refund one order."""
    print(f"  refunded {order_id}")
    if order_id == "A-1":
        guard.kill("run", "ticket-881", reason="Refund loop on one ticket", actor="usr_ops")
        print("  operator: killed run 'ticket-881'")
    return "refunded"


class ScriptedModel(BaseLlm):
    """Calls ``refund`` for each order in turn, then says what the tool answered (the
    current turn only: the requests hold the whole session)."""

    model: str = "scripted"
    orders: list[str] = []

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        answers: list[dict[str, Any]] = []
        for content in llm_request.contents:
            for part in content.parts or []:
                if part.text and content.role == "user":
                    answers = []  # a new user message: a new turn
                elif part.function_response is not None:
                    answers.append(part.function_response.response or {})
        if len(answers) < len(self.orders):
            order = self.orders[len(answers)]
            call = types.FunctionCall(
                name="refund", args={"order_id": order}, id=f"call-{len(answers) + 1}"
            )
            yield LlmResponse(
                content=types.Content(role="model", parts=[types.Part(function_call=call)])
            )
            return
        error = answers[-1].get("error")
        text = f"I could not refund: {error}" if error else "All refunds done."
        yield LlmResponse(content=types.ModelContent(text))


async def turn(runner: InMemoryRunner, session_id: str, message: str) -> str:
    """One user message in a session; the agent's last words."""
    session = await runner.session_service.get_session(
        app_name=runner.app_name, user_id="ops", session_id=session_id
    )
    if session is None:
        await runner.session_service.create_session(
            app_name=runner.app_name, user_id="ops", session_id=session_id
        )
    text = ""
    async for event in runner.run_async(
        user_id="ops", session_id=session_id, new_message=types.UserContent(message)
    ):
        parts = event.content.parts if event.content else None
        text = next((p.text for p in parts or [] if p.text), text)
    return text


def agent(*orders: str) -> LlmAgent:
    model = ScriptedModel(orders=list(orders))
    return LlmAgent(name="refund_bot", model=model, tools=[refund], instruction="Refund orders.")


async def main() -> None:
    print("session 'ticket-881', on_block='raise':")
    runner = guard_runner(InMemoryRunner(agent=agent("A-1", "A-2")), guard=guard)
    try:
        await turn(runner, "ticket-881", "Refund both orders")
    except PolicyViolationError as e:
        print(
            f"  run_async raised PolicyViolationError: {e.target_type} {e.target_id!r}: {e.reason}"
        )
    block = guard.interventions()[0]
    print(
        f"  {block.type} for {block.action!r} "
        f"(agent {block.agent_id!r}, run {block.run_id!r}, call {block.tool_call_id})"
    )

    print("another runner, on_block='message', session 'ticket-881':")
    runner = guard_runner(InMemoryRunner(agent=agent("A-3")), guard=guard, on_block="message")
    said = await turn(runner, "ticket-881", "Refund A-3")
    print(f"  agent says: {said.split(' [intervention')[0]}")

    guard.revive("run", "ticket-881", actor="usr_ops")
    print("revived:")
    said = await turn(runner, "ticket-881", "Refund A-3 again")
    print(f"  agent says: {said}")
    print(f"{len(guard.interventions())} HARD_BLOCK interventions recorded")


asyncio.run(main())
guard.close()
