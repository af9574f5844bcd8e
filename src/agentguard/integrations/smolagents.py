"""Guard Hugging Face smolagents tools.

Usage::

    from smolagents import ToolCallingAgent
    from agentguard.integrations.smolagents import guard_agent, guard_tools, unguard_tools

    agent = ToolCallingAgent(tools=[search, send_email], model=model, name="support_bot")
    guard_agent(agent, guard=guard)      # its tools, its name as agent id; a refusal ends run()

    tools = guard_tools([search, send_email], guard=guard, agent_id="support-bot")
    plain = unguard_tools(tools)                              # the original tools again

A guarded tool is a copy of the ``Tool`` (same class, name, description, ``inputs`` and
``output_type``) whose ``forward`` checks the kill state first, so a refused call never runs
the tool's body. A tool does not learn which agent calls it: fix the agent id here
(``agent_id=``) or with ``agentguard.scope(...)``.

``on_block="raise"`` (default): calling the tool raises ``PolicyViolationError``. Inside an
agent run, smolagents turns every tool exception into a step error for the model and goes on,
so ``guard_agent`` also adds a step callback that re-raises the refusal when the step ends:
``agent.run`` then stops with the ``PolicyViolationError`` itself. Tools guarded alone
(``guard_tools``) cannot reach the agent: their refusal is the step's error (the
``__cause__`` of ``AgentToolExecutionError``), and the run goes on with every further call
refused. A ``CodeAgent``'s tool calls are guarded the same way; the rest of the code it
writes, managed agents and model calls are not.

``on_block="message"``: the refusal, naming the kill and its reason, is the tool's output,
which the model reads as an observation.

A tool body that raises counts as failed (smolagents then shows the model its error).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import EMPTY_SCOPE, Scope, scope_of
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from smolagents import MultiStepAgent, Tool
    from smolagents.memory import ActionStep
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("smolagents", "smolagents", "smolagents") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "GuardedForward",
    "guard_agent",
    "guard_tool",
    "guard_tools",
    "unguard_agent",
    "unguard_tools",
]


class GuardedForward(wrapt.BaseObjectProxy[Any]):
    """A tool's bound ``forward`` behind the kill check."""

    def __init__(
        self,
        forward: Any,
        gate: Gate,
        original: Tool,
        found: Scope = EMPTY_SCOPE,
        refusals: list[PolicyViolationError] | None = None,
    ) -> None:
        super().__init__(forward)
        self._self_gate = gate
        self._self_original = original
        self._self_found = found  # the agent's name, from guard_agent
        self._self_refusals = refusals  # guard_agent's: re-raised when the step ends

    @property
    def original(self) -> Tool:
        """The tool as it was before ``guard_tool``."""
        return self._self_original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Check the call, then run the tool's body (or answer with the refusal)."""
        try:
            return self._self_gate.run(
                self._self_original.name,
                lambda: self.__wrapped__(*args, **kwargs),
                self._self_found,
                arguments=kwargs or list(args),
                answer=refusal_text,
            )
        except PolicyViolationError as error:
            if self._self_refusals is not None:
                self._self_refusals.append(error)
            raise


def guard_tool(
    tool: Tool,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> Tool:
    """Return a guarded copy of ``tool`` (a tool already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_tool", **ids)
    return _guarded(tool, gate)


def _guarded(
    tool: Tool,
    gate: Gate,
    found: Scope = EMPTY_SCOPE,
    refusals: list[PolicyViolationError] | None = None,
) -> Tool:
    if not isinstance(tool, Tool):
        raise InvalidInputError("tool", f"must be a smolagents Tool; got {type(tool).__name__}")
    if isinstance(tool.forward, GuardedForward):
        return tool
    guarded = copy.copy(tool)
    # Tool.__call__ runs self.forward: an instance attribute shadows the class's method.
    guarded.forward = GuardedForward(tool.forward, gate, tool, found, refusals)
    return guarded


class _StopOnRefusal:
    """A step callback: re-raise a refusal of this step, so ``agent.run`` ends with it."""

    def __init__(self) -> None:
        self.refusals: list[PolicyViolationError] = []
        self.active = True

    def __call__(self, step: ActionStep, agent: Any = None) -> None:
        if self.refusals:
            error = self.refusals[0]
            self.refusals.clear()
            if self.active:
                raise error


_stops: weakref.WeakKeyDictionary[MultiStepAgent, _StopOnRefusal] = weakref.WeakKeyDictionary()


def guard_agent(
    agent: MultiStepAgent,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> MultiStepAgent:
    """Guard every tool of ``agent`` in place (its name is the agent id unless one is given);
    with ``on_block="raise"`` a refusal ends ``agent.run``. Returns the agent."""
    gate = Gate(guard, on_block=on_block, where="guard_agent", **ids)
    if not isinstance(agent, MultiStepAgent):
        raise InvalidInputError("agent", f"must be a smolagents agent; got {type(agent).__name__}")
    stop = _stops.get(agent)
    if stop is None:
        stop = _StopOnRefusal()
        if on_block == "raise":
            agent.step_callbacks.register(ActionStep, stop)
            _stops[agent] = stop
    stop.active = True
    found = Scope(agent.name) if agent.name else EMPTY_SCOPE
    for name, tool in agent.tools.items():
        if name != "final_answer":
            agent.tools[name] = _guarded(tool, gate, found, stop.refusals)
    return agent


def unguard_agent(agent: MultiStepAgent) -> MultiStepAgent:
    """Undo ``guard_agent``: the agent's original tools, and refusals no longer end its run."""
    for name, tool in list(agent.tools.items()):
        (agent.tools[name],) = unguard_tools([tool])
    stop = _stops.get(agent)
    if stop is not None:
        stop.active = False  # smolagents has no way to remove a step callback
    return agent


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
