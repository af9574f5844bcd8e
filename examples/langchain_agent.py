"""Kill a LangChain agent mid-run, then revive it and resume from its checkpoint.

A `create_agent` email agent (LangChain's fake chat model, no network) sends emails one tool
call at a time. After the second email the operator kills the agent: its next tool call is
refused and the run stops with `PolicyViolationError`. After the revive, the same thread
resumes from its checkpoint and finishes. A second agent uses `on_block="message"`: the model
is told about the kill and answers instead of crashing.

    python examples/langchain_agent.py
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver

from agentguard import Guard, PolicyViolationError
from agentguard.integrations.langchain import AgentGuardMiddleware, guard_tools


class ScriptedChatModel(FakeMessagesListChatModel):
    """LangChain's fake chat model, able to bind tools like a provider's model."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def emails_then(final: str, *recipients: str) -> ScriptedChatModel:
    calls = [
        AIMessage("", tool_calls=[{"name": "send_email", "args": {"to": to}, "id": f"call-{i}"}])
        for i, to in enumerate(recipients, 1)
    ]
    return ScriptedChatModel(responses=[*calls, AIMessage(final)])


guard = Guard()


@tool
def send_email(to: str) -> str:
    """Send the campaign email to one recipient."""
    print(f"  sent to {to}")
    if to == "bob@example.com":
        guard.kill("agent", "email-bot", reason="Broken link in template", actor="usr_abc")
        print("  operator: killed agent 'email-bot'")
    return "sent"


agent = create_agent(
    emails_then("Campaign done.", "ann@example.com", "bob@example.com", "cid@example.com"),
    guard_tools([send_email], guard=guard),
    name="email-bot",
    checkpointer=InMemorySaver(),
)
config = {"configurable": {"thread_id": "campaign-7"}}

print("run 1:")
try:
    agent.invoke({"messages": [("user", "Send the campaign")]}, config)
except PolicyViolationError as e:
    print(f"  run stopped: {e.target_type} {e.target_id!r} killed by {e.killed_by}: {e.reason}")
block = guard.interventions()[0]
print(
    f"  {block.type} recorded for {block.action!r}, run {block.run_id!r}, call {block.tool_call_id}"
)

guard.revive("agent", "email-bot", actor="usr_abc")
print("revived; resuming thread 'campaign-7' from its checkpoint:")
result = agent.invoke(None, config)
print(f"  agent says: {result['messages'][-1].content}")

print("run 2 (on_block='message'):")
guard.kill("agent", "support-bot", reason="Customer asked us to stop", actor="usr_ops")
polite = create_agent(
    emails_then("I was stopped by an operator, so I sent nothing.", "dan@example.com"),
    [send_email],
    name="support-bot",
    middleware=[AgentGuardMiddleware(guard=guard, on_block="message")],
)
messages = polite.invoke({"messages": [("user", "Email Dan")]})["messages"]
refusal = next(m for m in messages if isinstance(m, ToolMessage))
print(f"  model was told: {refusal.content.split(' [intervention')[0]}")
print(f"  agent says: {messages[-1].content}")
guard.close()
