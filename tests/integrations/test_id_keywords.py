"""Every integration takes the scope ids as the same keywords (``scope.Ids``), and a misspelt
one is a TypeError naming the callable the user called and the keyword, as Python's own is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from agents import function_tool
from anthropic import Anthropic
from autogen_agentchat.agents import AssistantAgent
from autogen_core.tools import FunctionTool as AutoGenTool
from autogen_core.tools import StaticWorkbench
from autogen_ext.models.replay import ReplayChatCompletionClient
from google.adk.agents import LlmAgent
from google.adk.runners import InMemoryRunner
from langchain_core.tools import tool
from llama_index.core.tools import FunctionTool
from openai import OpenAI
from pydantic_ai import FunctionToolset
from smolagents import InferenceClientModel, Tool, ToolCallingAgent

from agentguard import Guard
from agentguard.integrations import (
    anthropic,
    autogen,
    functions,
    google_adk,
    httpx2,
    langchain,
    llama_index,
    mcp,
    openai,
    openai_agents,
    pydantic_ai,
    smolagents,
)


def send_email(to: str) -> str:
    """Send an email."""
    return to


class SendEmail(Tool):
    name = "send_email"
    description = "Send an email."
    inputs = {"to": {"type": "string", "description": "Recipient."}}
    output_type = "string"

    def forward(self, to: str) -> str:
        return to


ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "guard_function": lambda guard, **ids: functions.guard_function(send_email, guard, **ids),
    "guard_registry": lambda guard, **ids: functions.guard_registry([send_email], guard, **ids),
    "langchain.guard_tool": lambda guard, **ids: langchain.guard_tool(
        tool(send_email), guard, **ids
    ),
    "langchain.guard_tools": lambda guard, **ids: langchain.guard_tools([], guard, **ids),
    "langchain.AgentGuardMiddleware": lambda guard, **ids: langchain.AgentGuardMiddleware(
        guard, **ids
    ),
    "openai_agents.guard_tool": lambda guard, **ids: openai_agents.guard_tool(
        function_tool(send_email), guard, **ids
    ),
    "openai_agents.kill_switch_guardrail": lambda guard, **ids: openai_agents.kill_switch_guardrail(
        guard, **ids
    ),
    "mcp.AgentGuardMiddleware": lambda guard, **ids: mcp.AgentGuardMiddleware(guard, **ids),
    "pydantic_ai.guard_toolset": lambda guard, **ids: pydantic_ai.guard_toolset(
        FunctionToolset([send_email]), guard, **ids
    ),
    "pydantic_ai.AgentGuardCapability": lambda guard, **ids: pydantic_ai.AgentGuardCapability(
        guard, **ids
    ),
    "langchain+models.AgentGuardMiddleware": lambda guard, **ids: langchain.AgentGuardMiddleware(
        guard, models=True, **ids
    ),
    "google_adk+models.AgentGuardPlugin": lambda guard, **ids: google_adk.AgentGuardPlugin(
        guard, models=True, **ids
    ),
    "smolagents.guard_tool": lambda guard, **ids: smolagents.guard_tool(SendEmail(), guard, **ids),
    "smolagents.guard_tools": lambda guard, **ids: smolagents.guard_tools([], guard, **ids),
    "smolagents.guard_agent": lambda guard, **ids: smolagents.guard_agent(
        ToolCallingAgent(tools=[], model=InferenceClientModel()), guard, **ids
    ),
    "llama_index.guard_tool": lambda guard, **ids: llama_index.guard_tool(
        FunctionTool.from_defaults(send_email), guard, **ids
    ),
    "llama_index.guard_tools": lambda guard, **ids: llama_index.guard_tools([], guard, **ids),
    "autogen.guard_tool": lambda guard, **ids: autogen.guard_tool(
        AutoGenTool(send_email, description="Send an email."), guard, **ids
    ),
    "autogen.guard_tools": lambda guard, **ids: autogen.guard_tools([], guard, **ids),
    "autogen.guard_workbench": lambda guard, **ids: autogen.guard_workbench(
        StaticWorkbench([]), guard, **ids
    ),
    "autogen.guard_agent": lambda guard, **ids: autogen.guard_agent(
        AssistantAgent("mailer", model_client=ReplayChatCompletionClient([])), guard, **ids
    ),
    "google_adk.AgentGuardPlugin": lambda guard, **ids: google_adk.AgentGuardPlugin(guard, **ids),
    "google_adk.guard_runner": lambda guard, **ids: google_adk.guard_runner(
        InMemoryRunner(agent=LlmAgent(name="bot")), guard, **ids
    ),
    "openai.guard_openai": lambda guard, **ids: openai.guard_openai(
        OpenAI(api_key="sk-test"), guard, **ids
    ),
    "anthropic.guard_anthropic": lambda guard, **ids: anthropic.guard_anthropic(
        Anthropic(api_key="sk-test"), guard, **ids
    ),
    "httpx2.GuardedTransport": lambda guard, **ids: httpx2.GuardedTransport(None, guard, **ids),
    "httpx2.AsyncGuardedTransport": lambda guard, **ids: httpx2.AsyncGuardedTransport(
        None, guard, **ids
    ),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_misspelt_id_keyword_names_the_callable_and_the_keyword(entry: str) -> None:
    guard = Guard()
    called = entry.rpartition(".")[2]
    with pytest.raises(
        TypeError, match=rf"^{called}\(\) got an unexpected keyword argument 'agentid'"
    ):
        ENTRY_POINTS[entry](guard, agentid="bot")
    ENTRY_POINTS[entry](guard, agent_id="bot", run_id="r1", mission_id="m1")  # the right ones
    guard.close()
