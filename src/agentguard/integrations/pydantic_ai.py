"""Guard Pydantic AI tools.

Usage::

    from pydantic_ai import Agent, FunctionToolset
    from agentguard.integrations.pydantic_ai import guard_toolset, unguard_toolset

    tools = guard_toolset(FunctionToolset([search, send_email]), guard=guard)
    agent = Agent("openai:gpt-5", name="support-bot", toolsets=[tools])
    plain = unguard_toolset(tools)                           # the original toolset again

A guarded toolset is a ``WrapperToolset``: the agent sees the wrapped toolset's tools, names
and schemas unchanged, and each ``call_tool`` checks the kill state before the tool body runs
(after Pydantic AI has validated the arguments).

Scope: ids fixed here win, then ``agentguard.scope(...)``, then the run — the agent's ``name``
is the agent id and the run's ``run_id`` (``Agent.run(run_id=...)`` or a fresh one) the run id.

``on_block="raise"`` (default): ``Agent.run`` raises the ``PolicyViolationError`` itself.
``on_block="message"``: the model gets the refusal, naming the kill and its reason, as the
tool's return value and the run goes on. A tool body that raises counts as failed; a
``ModelRetry`` counts too (the model is asked to try again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..scope import Scope
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from pydantic_ai import RunContext
    from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("pydantic_ai", "Pydantic AI", "pydantic-ai") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = ["GuardedToolset", "guard_toolset", "unguard_toolset"]


@dataclass
class GuardedToolset(WrapperToolset[Any]):
    """A toolset whose every tool call is checked against the kill state first."""

    gate: Gate

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        """Check the call, then run the tool (or answer with the refusal)."""
        return await self.gate.arun(
            name,
            lambda: self.wrapped.call_tool(name, tool_args, ctx, tool),
            _found(ctx),
            tool_call_id=ctx.tool_call_id,
            arguments=tool_args,
            answer=refusal_text,
        )


def guard_toolset(
    toolset: AbstractToolset[Any],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> AbstractToolset[Any]:
    """Return ``toolset`` guarded (a toolset already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_toolset", **ids)
    if isinstance(toolset, GuardedToolset):
        return toolset
    return GuardedToolset(toolset, gate)


def unguard_toolset(toolset: AbstractToolset[Any]) -> AbstractToolset[Any]:
    """Undo ``guard_toolset``: the original toolset."""
    return toolset.wrapped if isinstance(toolset, GuardedToolset) else toolset


def _found(ctx: RunContext[Any]) -> Scope:
    """The run's ids: the agent's ``name`` and the run's ``run_id``."""
    return Scope(getattr(ctx.agent, "name", None) or None, ctx.run_id or None)
