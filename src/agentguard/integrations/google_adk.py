"""Guard Google ADK tool calls (and model calls) with a plugin.

Usage::

    from google.adk.runners import InMemoryRunner
    from agentguard.integrations.google_adk import AgentGuardPlugin, guard_runner, unguard_runner

    runner = guard_runner(InMemoryRunner(agent=agent), guard=guard)  # every agent's tool calls
    async for event in runner.run_async(user_id="u1", session_id="s1", new_message=message):
        ...
    unguard_runner(runner)                                            # the runner as it was

    # or on an App (then a refusal ends the run with ADK's RuntimeError, see below):
    app = App(name="support", root_agent=agent, plugins=[AgentGuardPlugin(guard=guard)])

    # model calls too, priced from their token usage:
    guard_runner(runner, guard=guard, models=True, prices={"gemini-2.5-flash": (0.30, 2.50)})

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

Model calls (``models=True``; off by default, so a model client guarded otherwise is not
counted twice): ``before_model_callback`` checks each model call of every agent as the action
``llm`` with the request's model, with the same ids as the tool calls, before the model is
called. A refusal ends the run as a tool's does (``on_block="raise"``), or answers for the model
with a reply saying the agent was stopped, naming the kill and its reason, which calls no tool,
so the agent's turn ends with it (``"message"``). ``after_model_callback`` reads the first
complete (not ``partial``) response's ``usage_metadata`` (``prompt_token_count`` and
``tool_use_prompt_token_count`` as input, ``candidates_token_count`` and
``thoughts_token_count`` as output, ``cached_content_token_count`` as cache reads): priced with
``prices``, it is added to the guard's cost, so a ``BudgetRule`` trips on real spend, and
recorded on a GenAI span. A model call that raises (``on_model_error_callback``) or answers
with an ``error_code`` counts as failed. With SSE streaming the complete response is the
aggregate ADK sends last (progressive streaming, ADK's default); ``run_live`` is not covered.
"""

from __future__ import annotations

import weakref
from contextlib import aclosing
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..pricing import Usage
from ..scope import Scope, scope_of
from ._gate import Admitted, Gate, OnBlock, missing, refusal_text, uninstall_all
from ._model import ModelCall, ModelGate, stopped_reply

try:
    from google.adk.agents.callback_context import CallbackContext
    from google.adk.agents.readonly_context import ReadonlyContext
    from google.adk.models.llm_request import LlmRequest
    from google.adk.models.llm_response import LlmResponse
    from google.adk.plugins.base_plugin import BasePlugin
    from google.adk.runners import Runner
    from google.adk.tools.base_tool import BaseTool
    from google.adk.tools.tool_context import ToolContext
    from google.genai import types
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("google_adk", "Google ADK", "google-adk") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Unpack

    from ..guard import Guard
    from ..pricing import Prices, PriceTable
    from ..scope import Ids

__all__ = ["AgentGuardPlugin", "guard_runner", "unguard_runner"]

# The run id of the tool call being run, for the runs it starts (AgentTool's nested session).
# ADK runs each tool call's callbacks and body in one context of its own, so this reaches the
# tool's body and stays out of sibling calls.
_calling_run: ContextVar[str | None] = ContextVar("agentguard_adk_calling_run", default=None)


class AgentGuardPlugin(BasePlugin):
    """An ADK plugin checking every tool call (and, with ``models=True``, every model call)
    against the kill state before it is made."""

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        models: bool = False,
        prices: Prices | PriceTable | None = None,
        name: str = "agentguard",
        **ids: Unpack[Ids],
    ) -> None:
        """``models``: guard the agents' model calls too, pricing their usage with ``prices``."""
        super().__init__(name)
        self.gate = Gate(guard, on_block=on_block, where="AgentGuardPlugin", **ids)
        if not isinstance(models, bool):
            raise InvalidInputError("models", f"must be True or False; got {models!r}")
        if prices is not None and not models:
            raise InvalidInputError("prices", "prices model calls: pass models=True with it")
        self.models = (
            ModelGate(guard, prices=prices, where="AgentGuardPlugin", **ids) if models else None
        )
        # Admitted calls whose outcome is not known yet, by their ADK tool context.
        self._running: weakref.WeakKeyDictionary[ToolContext, Admitted] = (
            weakref.WeakKeyDictionary()
        )
        self._calling = _ModelCalls()

    async def before_model_callback(
        self, *, callback_context: CallbackContext, llm_request: LlmRequest
    ) -> LlmResponse | None:
        """Admit the model call (``None``: ADK calls the model) or refuse it as ``on_block``
        says."""
        if self.models is None:
            return None
        try:
            call = await self.models.acheck(llm_request.model, _found(callback_context))
        except PolicyViolationError as error:
            if self.gate.on_block == "message":
                return LlmResponse(content=types.ModelContent(stopped_reply(error)))
            raise
        self._calling.put(callback_context.actions, call)
        return None

    async def after_model_callback(
        self, *, callback_context: CallbackContext, llm_response: LlmResponse
    ) -> LlmResponse | None:
        """Record the call's usage from its complete response (which is left as it is)."""
        if self.models is None or llm_response.partial:
            return None
        call = self._calling.pop(callback_context.actions)
        if call is not None:
            error = llm_response.error_code
            call.finish(_usage(llm_response), error_type=str(error) if error else None)
        return None

    async def on_model_error_callback(
        self, *, callback_context: CallbackContext, llm_request: LlmRequest, error: Exception
    ) -> LlmResponse | None:
        """Count the model call as failed (the error goes on to ADK and other plugins)."""
        call = self._calling.pop(callback_context.actions) if self.models is not None else None
        if call is not None:
            # ADK passes a cancelled call's CancelledError here too: not a failure of the model.
            call.finish(error_type=type(error).__name__ if isinstance(error, Exception) else None)
        return None

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
    models: bool = False,
    prices: Prices | PriceTable | None = None,
    **ids: Unpack[Ids],
) -> Runner:
    """Guard every tool call ``runner`` runs (and model call, with ``models=True``):
    ``AgentGuardPlugin`` first in its plugins (one already there is kept as it is), and a
    refusal ends ``run_async``/``run`` with the ``PolicyViolationError`` itself. Returns the
    runner."""
    scope_of(ids, "guard_runner", validate=False)  # a misspelt keyword names guard_runner
    plugin = AgentGuardPlugin(  # bad arguments fail here
        guard, on_block=on_block, models=models, prices=prices, **ids
    )
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


class _ModelCalls:
    """Admitted model calls whose response has not come yet, by their ADK model call: the
    actions of the event its callbacks write to, one object from before to after. An entry
    whose call never answers (a later callback answered for the model) goes with that object."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[weakref.ref[Any], ModelCall]] = {}

    def put(self, actions: Any, call: ModelCall) -> None:
        key = id(actions)
        calls = self._calls
        calls[key] = (weakref.ref(actions, lambda _: calls.pop(key, None)), call)

    def pop(self, actions: Any) -> ModelCall | None:
        key = id(actions)
        entry = self._calls.get(key)
        if entry is None or entry[0]() is not actions:
            return None
        del self._calls[key]
        return entry[1]


def _usage(response: LlmResponse) -> Usage | None:
    """A response's token usage, as Gemini reports it (thinking tokens are output)."""
    meta = response.usage_metadata
    if meta is None:
        return None
    return Usage(
        input_tokens=(meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0),
        output_tokens=(meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0),
        cached_input_tokens=meta.cached_content_token_count or 0,
        model=response.model_version or None,
    )


def _found(context: ReadonlyContext) -> Scope:
    """ADK's ids for a call: the agent's name, and the session id (or the calling tool's)."""
    return Scope(context.agent_name or None, _calling_run.get() or context.session.id or None)


def _answer(error: PolicyViolationError) -> dict[str, Any]:
    """The refused tool's response, for the model to read."""
    return {"error": refusal_text(error)}
