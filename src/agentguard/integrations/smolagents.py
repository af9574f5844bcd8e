"""Guard Hugging Face smolagents tools.

Usage::

    from smolagents import ToolCallingAgent
    from agentguard.integrations.smolagents import guard_tools, unguard_tools

    tools = guard_tools([search, send_email], guard=guard, agent_id="support-bot")
    agent = ToolCallingAgent(tools=tools, model=model, name="support-bot")
    plain = unguard_tools(tools)                              # the original tools again

A guarded tool is a copy of the ``Tool`` (same class, name, description, ``inputs`` and
``output_type``) whose ``forward`` checks the kill state first, so a refused call never runs
the tool's body. A tool does not learn which agent calls it: fix the agent id here
(``agent_id=``) or with ``agentguard.scope(...)``.

``on_block="raise"`` (default): calling the tool raises ``PolicyViolationError``. Inside an
agent run, smolagents turns every tool exception into ``AgentToolExecutionError`` (the
``PolicyViolationError`` is its ``__cause__``), records it as the step's error and shows the
model the error text, so the run goes on and each further call is refused the same way; the
refusal does not end ``agent.run`` (call ``agent.interrupt()`` for that). A ``CodeAgent``'s
tool calls are guarded the same way (its step error is ``AgentExecutionError``, naming the
refusal); the rest of the code it writes, managed agents and model calls are not.

``on_block="message"``: the refusal, naming the kill and its reason, is the tool's output,
which the model reads as an observation.

A tool body that raises counts as failed (smolagents then shows the model its error).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import wrapt

from ..errors import InvalidInputError
from ..scope import scope_of
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from smolagents import Tool
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("smolagents", "smolagents", "smolagents") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = ["GuardedForward", "guard_tool", "guard_tools", "unguard_tools"]


class GuardedForward(wrapt.BaseObjectProxy[Any]):
    """A tool's bound ``forward`` behind the kill check."""

    def __init__(self, forward: Any, gate: Gate, original: Tool) -> None:
        super().__init__(forward)
        self._self_gate = gate
        self._self_original = original

    @property
    def original(self) -> Tool:
        """The tool as it was before ``guard_tool``."""
        return self._self_original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Check the call, then run the tool's body (or answer with the refusal)."""
        return self._self_gate.run(
            self._self_original.name,
            lambda: self.__wrapped__(*args, **kwargs),
            arguments=kwargs or list(args),
            answer=refusal_text,
        )


def guard_tool(
    tool: Tool,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> Tool:
    """Return a guarded copy of ``tool`` (a tool already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_tool", **ids)
    if not isinstance(tool, Tool):
        raise InvalidInputError("tool", f"must be a smolagents Tool; got {type(tool).__name__}")
    if isinstance(tool.forward, GuardedForward):
        return tool
    guarded = copy.copy(tool)
    # Tool.__call__ runs self.forward: an instance attribute shadows the class's method.
    guarded.forward = GuardedForward(tool.forward, gate, tool)
    return guarded


def guard_tools(
    tools: Iterable[Tool],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> list[Tool]:
    """Return the tools guarded, in order."""
    scope_of(ids, "guard_tools", validate=False)  # a misspelt keyword, even with no tools
    return [guard_tool(t, guard, on_block=on_block, **ids) for t in tools]


def unguard_tools(tools: Iterable[Any]) -> list[Any]:
    """Undo ``guard_tools``: the original tool objects."""
    return [
        t.forward.original if isinstance(t, Tool) and isinstance(t.forward, GuardedForward) else t
        for t in tools
    ]
