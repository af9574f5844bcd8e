"""Guard Google ADK tool calls with a plugin.

Usage::

    from google.adk.runners import InMemoryRunner
    from agentguard.integrations.google_adk import AgentGuardPlugin, guard_runner, unguard_runner

    runner = guard_runner(InMemoryRunner(agent=agent), guard=guard)  # every agent's tool calls
    async for event in runner.run_async(user_id="u1", session_id="s1", new_message=message):
        ...
    unguard_runner(runner)                                            # the runner as it was

    # or on an App (then a refusal ends the run with ADK's RuntimeError, see below):
    app = App(name="support", root_agent=agent, plugins=[AgentGuardPlugin(guard=guard)])

``AgentGuardPlugin`` is an ADK ``BasePlugin``: its ``before_tool_callback`` checks the kill
state before each tool call of every agent the runner runs (sub-agents, agents called through
``AgentTool``, tools from toolsets), so a refused call never runs the tool. Tools, names and
declarations are not touched. ``guard_runner`` puts the plugin first in the runner's plugins
(a plugin before it could answer a call or a tool error without it seeing them).

Scope: ids fixed here win, then ``agentguard.scope(...)``, then ADK's — the calling agent's
``name`` is the agent id and the session id the run id. The session is the conversation an
operator sees and names, across every ``run_async`` call of it; an invocation id is minted per
call and unknown before it starts. Tools of an agent called through ``AgentTool`` (which runs
it in a throwaway session) take the calling tool's run id.

``on_block="raise"`` (default): ADK's plugin manager turns any exception a plugin raises into
``RuntimeError("Error in plugin ...")`` whose ``__cause__`` is the refusal, and ends the run
with it. ``guard_runner`` also wraps the runner's ``run_async`` (which ``run`` drives) to raise
the ``PolicyViolationError`` itself instead. ``on_block="message"``: the tool's response is
``{"error": ...}``, naming the kill and its reason, which the model reads; the run goes on.

A tool body that raises counts as failed (``on_tool_error_callback``), whether the run then
ends with the error or a plugin after this one answers it for the model.
"""

from __future__ import annotations

import weakref
from contextlib import aclosing
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import Scope, scope_of
from ._gate import Admitted, Gate, OnBlock, missing, refusal_text, uninstall_all

try:
    from google.adk.agents.readonly_context import ReadonlyContext
    from google.adk.plugins.base_plugin import BasePlugin
    from google.adk.runners import Runner
    from google.adk.tools.base_tool import BaseTool
    from google.adk.tools.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("google_adk", "Google ADK", "google-adk") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = ["AgentGuardPlugin", "guard_runner", "unguard_runner"]

# The run id of the tool call being run, for the runs it starts (AgentTool's nested session).
# ADK runs each tool call's callbacks and body in one context of its own, so this reaches the
# tool's body and stays out of sibling calls.
_calling_run: ContextVar[str | None] = ContextVar("agentguard_adk_calling_run", default=None)


class AgentGuardPlugin(BasePlugin):
    """An ADK plugin checking every tool call against the kill state before the tool runs."""

    # A model-call hook belongs here too: ``before_model_callback`` checking through
    # ``self.gate`` with ``_found(callback_context)``; ``guard_runner`` unwraps whatever
    # refusal any callback of a plugin raises.

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        name: str = "agentguard",
        **ids: Unpack[Ids],
    ) -> None:
        super().__init__(name)
        self.gate = Gate(guard, on_block=on_block, where="AgentGuardPlugin", **ids)
        # Admitted calls whose outcome is not known yet, by their ADK tool context.
        self._running: weakref.WeakKeyDictionary[ToolContext, Admitted] = (
            weakref.WeakKeyDictionary()
        )

    async def before_tool_callback(
        self, *, tool: BaseTool, tool_args: dict[str, Any], tool_context: ToolContext
    ) -> dict[str, Any] | None:
        """Admit the call (``None``: ADK runs the tool) or refuse it as ``on_block`` says."""
        found = _found(tool_context)
        try:
            admitted = await self.gate.acheck(
                tool.name, found, tool_call_id=tool_context.function_call_id, arguments=tool_args
            )
        except PolicyViolationError as error:
            return self.gate.refused(error, _answer)
        self._running[tool_context] = admitted
        _calling_run.set(found.run_id)
        return None

    async def after_tool_callback(
        self,
        *,
        tool: BaseTool,
        tool_args: dict[str, Any],
        tool_context: ToolContext,
        result: dict[str, Any],
    ) -> dict[str, Any] | None:
        """The call is over (its result is left as it is)."""
        self._running.pop(tool_context, None)
        return None

    async def on_tool_error_callback(
        self,
        *,
        tool: BaseTool,
        tool_args: dict[str, Any],
        tool_context: ToolContext,
        error: Exception,
    ) -> dict[str, Any] | None:
        """Count the call as failed (the error goes on to ADK and other plugins)."""
        admitted = self._running.pop(tool_context, None)
        # ADK passes a cancelled call's CancelledError here too: not a failure of the tool.
        if admitted is not None and isinstance(error, Exception):
            admitted.failed()
        return None


def guard_runner(
    runner: Runner,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> Runner:
    """Guard every tool call ``runner`` runs: ``AgentGuardPlugin`` first in its plugins (one
    already there is kept as it is), and a refusal ends ``run_async``/``run`` with the
    ``PolicyViolationError`` itself. Returns the runner."""
    scope_of(ids, "guard_runner", validate=False)  # a misspelt keyword names guard_runner
    plugin = AgentGuardPlugin(guard, on_block=on_block, **ids)  # bad arguments fail here
    if not isinstance(runner, Runner):
        raise InvalidInputError(
            "runner", f"must be a Google ADK Runner; got {type(runner).__name__}"
        )
    plugins = runner.plugin_manager.plugins
    if not any(isinstance(p, AgentGuardPlugin) for p in plugins):
        plugins.insert(0, plugin)
    if not isinstance(vars(runner).get("run_async"), _RaisesRefusals):
        runner.run_async = _RaisesRefusals(runner.run_async)  # type: ignore[method-assign]
    return runner


def unguard_runner(runner: Runner) -> Runner:
    """Undo ``guard_runner`` (and remove any ``AgentGuardPlugin``): the runner as it was."""
    uninstall_all(runner.plugin_manager.plugins, AgentGuardPlugin)
    if isinstance(vars(runner).get("run_async"), _RaisesRefusals):
        del runner.run_async
    return runner


class _RaisesRefusals(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A runner's bound ``run_async``, raising a plugin's refusal instead of ADK's wrapper."""

    def __init__(self, run_async: Any) -> None:
        super().__init__(run_async, _raise_refusals)


async def _raise_refusals(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    async with aclosing(wrapped(*args, **kwargs)) as events:
        try:
            async for event in events:
                yield event
        except RuntimeError as error:
            refusal = error.__cause__
            if type(error) is not RuntimeError or not isinstance(refusal, PolicyViolationError):
                raise
        else:
            return
    raise refusal  # outside the handler: ADK's RuntimeError does not become its context


def _found(context: ReadonlyContext) -> Scope:
    """ADK's ids for a call: the agent's name, and the session id (or the calling tool's)."""
    return Scope(context.agent_name or None, _calling_run.get() or context.session.id or None)


def _answer(error: PolicyViolationError) -> dict[str, Any]:
    """The refused tool's response, for the model to read."""
    return {"error": refusal_text(error)}
