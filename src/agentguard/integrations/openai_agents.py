"""Guard OpenAI Agents SDK function tools.

Usage::

    from agents import Agent, RunConfig, Runner, function_tool
    from agentguard.integrations.openai_agents import guard_tools, kill_switch_guardrail

    agent = Agent(name="support-bot", tools=guard_tools([search, send_email], guard=guard))
    await Runner.run(agent, "...", run_config=RunConfig(group_id="run-42"))
    plain = unguard_tools(agent.tools)                       # the original tools again

    # or as a tool input guardrail on the tools you declare:
    @function_tool(tool_input_guardrails=[kill_switch_guardrail(guard=guard)])
    def send_email(to: str) -> str: ...

A guarded tool is a copy of the ``FunctionTool`` (same class, name, description and
``params_json_schema``) whose ``on_invoke_tool`` checks the kill state first. The check sits
outside the SDK's own failure handling, so a refusal is never turned into a tool error message.

Scope: ids fixed here win, then ``agentguard.scope(...)``, then the run — the agent's ``name``
is the agent id and ``RunConfig.group_id`` (the conversation) the run id.

A kill that comes while a guarded tool runs stops it: an async tool at its next ``await``, a
sync one (run in a worker thread by the SDK) is left to finish in its thread while the run
stops waiting for it; the call then ends as a refusal does (``cancel_in_flight=False``: tools
run to their end). The guardrail only checks before the call.

``on_block="raise"`` (default): ``Runner.run`` raises the ``PolicyViolationError`` itself, not
wrapped in ``UserError`` (its class is ``AgentsPolicyViolationError``, a ``PolicyViolationError``
that is also an ``AgentsException``, which the SDK passes through). ``on_block="message"``: the
model gets the refusal, naming the kill and its reason, as the tool's output and the run goes on.

A guarded tool counts a call as failed when its exception reaches the guard: the SDK's default
``failure_error_function`` turns it into a message for the model first, so pass
``failure_error_function=None`` to ``function_tool`` where failures should count (error-rate
rules). The guardrail only checks; it counts no failures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import wrapt

from ..errors import (
    InvalidInputError,
    KillStateUnavailableError,
    PolicyViolationError,
    _rebuild_violation,
)
from ..scope import Scope, scope_of
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from agents import AgentsException, FunctionTool
    from agents.tool_context import ToolContext
    from agents.tool_guardrails import (
        ToolGuardrailFunctionOutput,
        ToolInputGuardrail,
        ToolInputGuardrailData,
    )
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("openai_agents", "the OpenAI Agents SDK", "openai-agents") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "AgentsKillStateUnavailableError",
    "AgentsPolicyViolationError",
    "GuardedInvoker",
    "guard_tool",
    "guard_tools",
    "kill_switch_guardrail",
    "unguard_tools",
]

R = TypeVar("R")


class AgentsPolicyViolationError(PolicyViolationError, AgentsException):
    """A ``PolicyViolationError`` the Agents SDK lets out of ``Runner.run`` unwrapped."""

    def __reduce__(self) -> Any:
        state = {k: v for k, v in self.__dict__.items() if k != "run_data"}
        return (_rebuild_violation, (state,))


class AgentsKillStateUnavailableError(AgentsPolicyViolationError, KillStateUnavailableError):
    """A ``KillStateUnavailableError`` the Agents SDK lets out of ``Runner.run`` unwrapped."""


class _AgentsGate(Gate):
    """The gate, raising refusals as the subclass the SDK re-raises instead of wrapping them
    in ``UserError``."""

    __slots__ = ()

    def refused(
        self, error: PolicyViolationError, answer: Callable[[PolicyViolationError], R] | None
    ) -> R:
        if answer is None or self.on_block == "raise":
            unavailable = isinstance(error, KillStateUnavailableError)
            error.__class__ = (
                AgentsKillStateUnavailableError if unavailable else AgentsPolicyViolationError
            )
            error.run_data = None  # type: ignore[attr-defined]
        return super().refused(error, answer)


class GuardedInvoker(wrapt.BaseObjectProxy[Any]):
    """A tool's ``on_invoke_tool`` behind the kill check."""

    def __init__(self, invoker: Any, gate: Gate, original: FunctionTool) -> None:
        super().__init__(invoker)
        self._self_gate = gate
        self._self_original = original

    @property
    def original(self) -> FunctionTool:
        """The tool as it was before ``guard_tool``."""
        return self._self_original

    async def __call__(self, ctx: ToolContext[Any], input: str) -> Any:
        """Check the call, then invoke the tool (or answer with the refusal)."""
        return await self._self_gate.arun(
            ctx.tool_name,
            lambda: self.__wrapped__(ctx, input),
            _found(ctx, getattr(ctx, "agent", None)),
            tool_call_id=ctx.tool_call_id,
            arguments=input,
            answer=refusal_text,
        )

    def __agents_bind_function_tool__(self, tool: FunctionTool) -> Any:
        """Keep the guard when the SDK copies the tool and rebinds its invoker."""
        bind = getattr(self.__wrapped__, "__agents_bind_function_tool__", None)
        inner = bind(tool) if callable(bind) else self.__wrapped__
        if inner is self.__wrapped__:
            return self
        return GuardedInvoker(inner, self._self_gate, self._self_original)


def guard_tool(
    tool: FunctionTool,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> FunctionTool:
    """Return a guarded copy of ``tool`` (a tool already guarded is returned as it is)."""
    gate = _AgentsGate(
        guard, on_block=on_block, cancel_in_flight=cancel_in_flight, where="guard_tool", **ids
    )
    if not isinstance(tool, FunctionTool):
        raise InvalidInputError(
            "tool",
            f"must be a FunctionTool; got {type(tool).__name__} (hosted tools run on the "
            "provider's side and cannot be guarded in-process)",
        )
    if isinstance(tool.on_invoke_tool, GuardedInvoker):
        return tool
    guarded = copy.copy(tool)
    guarded.on_invoke_tool = GuardedInvoker(guarded.on_invoke_tool, gate, tool)
    return guarded


def guard_tools(
    tools: Iterable[FunctionTool],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> list[FunctionTool]:
    """Return the tools guarded, in order."""
    scope_of(ids, "guard_tools", validate=False)  # a misspelt keyword, even with no tools
    return [
        guard_tool(t, guard, on_block=on_block, cancel_in_flight=cancel_in_flight, **ids)
        for t in tools
    ]


def unguard_tools(tools: Iterable[Any]) -> list[Any]:
    """Undo ``guard_tools``: the original tool objects."""
    return [
        t.on_invoke_tool.original
        if isinstance(t, FunctionTool) and isinstance(t.on_invoke_tool, GuardedInvoker)
        else t
        for t in tools
    ]


def kill_switch_guardrail(
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> ToolInputGuardrail[Any]:
    """A tool input guardrail that refuses the call while any of its targets is killed."""
    gate = _AgentsGate(guard, on_block=on_block, where="kill_switch_guardrail", **ids)

    async def agentguard_kill_switch(
        data: ToolInputGuardrailData,
    ) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        try:
            await gate.acheck(
                ctx.tool_name,
                _found(ctx, data.agent),
                tool_call_id=ctx.tool_call_id,
                arguments=ctx.tool_arguments,
            )
        except PolicyViolationError as error:
            return gate.refused(error, _reject)
        return ToolGuardrailFunctionOutput.allow()

    return ToolInputGuardrail(
        guardrail_function=agentguard_kill_switch, name="agentguard_kill_switch"
    )


def _found(ctx: ToolContext[Any], agent: Any) -> Scope:
    """The run's ids: the agent's ``name`` and ``RunConfig.group_id``."""
    run_config = getattr(ctx, "run_config", None)
    return Scope(
        getattr(agent, "name", None) or None, getattr(run_config, "group_id", None) or None
    )


def _reject(error: PolicyViolationError) -> ToolGuardrailFunctionOutput:
    return ToolGuardrailFunctionOutput.reject_content(
        refusal_text(error), output_info={"intervention_id": error.intervention_id}
    )
