"""Guard LangChain tools and ``create_agent`` agents.

Usage::

    from langchain.agents import create_agent
    from agentguard.integrations.langchain import AgentGuardMiddleware, guard_tools

    tools = guard_tools([search, send_email], guard=guard)     # or guard_tool(one)
    agent = create_agent(model, tools, name="support-bot")

    # or leave the tools alone and guard every tool call of the agent:
    agent = create_agent(model, [search, send_email], name="support-bot",
                         middleware=[AgentGuardMiddleware(guard=guard)])
    agent.invoke({"messages": [...]}, {"configurable": {"thread_id": "run-42"}})

    # and its model calls too, priced from their token usage:
    AgentGuardMiddleware(guard=guard, models=True, prices=LIST_PRICES_2025_11)

    plain = unguard_tools(tools)                               # the original tools again

A guarded tool is a ``wrapt`` proxy: still an instance of ``BaseTool`` and of its own class,
with the same name, description, ``args_schema`` and ``tool_call_schema``, so ``bind_tools``,
``ToolNode`` and ``create_agent`` see the tool they always saw. Use one of the two (tools or
middleware) per agent, not both.

Scope: ids fixed here win, then ``agentguard.scope(...)``, then the run's config — the
``thread_id`` is the run id and the agent's ``name`` (``lc_agent_name``) the agent id.

A kill that comes while a tool runs stops it: an async tool at its next ``await``, a sync one
once it checks ``guard.raise_if_killed()`` (or its token, ``agentguard.current_call()``);
the tool call then ends as a refusal does (``cancel_in_flight=False``: tools run to their end).

``on_block="raise"`` (default) stops the run with ``PolicyViolationError``. It is not a
``ToolException``, so a tool's ``handle_tool_error`` does not turn it into a message, and
``create_agent``'s default tool-error handling re-raises it. (A ``ToolNode`` you build yourself
with ``handle_tool_errors=True`` catches every exception; use ``on_block="message"`` there.)
``on_block="message"`` answers the model with an error ``ToolMessage`` naming the kill and its
reason (a tool stopped midway: "stopped after 2.1 s"), and the run goes on. A call that raises
or ends in an error ``ToolMessage`` (a ``ToolException`` the tool handled) counts as failed,
with tools and middleware alike.
Model calls (``AgentGuardMiddleware(models=True)``; off by default, so a client already
guarded with ``guard_openai``/``guard_anthropic`` is not counted twice): ``wrap_model_call``
checks each model call of the agent as the action ``llm`` with the chat model's name
(``model_name``, ``model`` or ``model_id``) before it is made, with the same ids as its tool
calls. ``on_block="raise"`` stops the run with the ``PolicyViolationError``;
``on_block="message"`` answers with an ``AIMessage`` saying the agent was stopped, naming the
kill and its reason, which asks for no tool, so the run ends with it. The answer's
``usage_metadata`` (streamed runs included) is priced with ``prices`` and added to the guard's
cost, so a ``BudgetRule`` trips on real spend, and recorded on a GenAI span; a model call that
raises counts as failed. Middleware compose first-outermost: put this one first, so that no
retry or fallback middleware catches its refusal; it then sees one call per model step. Not
seen: model calls a middleware makes itself (``SummarizationMiddleware``'s summaries).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..pricing import Usage
from ..scope import Scope, scope_of
from ._gate import Gate, OnBlock, missing, refusal_text
from ._model import ModelGate, stopped_reply

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        ModelRequest,
        ModelResponse,
        ToolCallRequest,
    )
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.runnables.config import var_child_runnable_config
    from langchain_core.tools import BaseTool
    from langchain_core.tools import tool as _as_tool
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("langchain", "LangChain", "langchain") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..pricing import Prices, PriceTable
    from ..scope import Ids

__all__ = ["AgentGuardMiddleware", "GuardedTool", "guard_tool", "guard_tools", "unguard_tools"]

_EMPTY: Mapping[str, Any] = {}

# Runnable entry points that reach the tool through ``self.run``/``self.arun`` or wrap
# ``self`` in a new runnable: run with the proxy as ``self`` so the check cannot be bypassed.
_REBOUND = (
    "invoke",
    "ainvoke",
    "stream",
    "astream",
    "batch",
    "abatch",
    "batch_as_completed",
    "abatch_as_completed",
    "transform",
    "atransform",
    "astream_events",
    "astream_log",
    "with_config",
    "bind",
    "with_retry",
    "with_fallbacks",
    "with_listeners",
    "with_alisteners",
    "with_types",
    "pipe",
    "__or__",
    "__ror__",
)


class GuardedTool(wrapt.BaseObjectProxy[BaseTool]):
    """A LangChain tool refused while its agent, run, mission or name is killed."""

    def __init__(self, tool: BaseTool, gate: Gate) -> None:
        super().__init__(tool)
        self._self_gate = gate
        self._self_name = tool.name

    def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """``BaseTool.run`` behind the kill check."""
        call_id = kwargs.get("tool_call_id")
        return self._self_gate.run(
            self._self_name,
            lambda: self.__wrapped__.run(tool_input, *args, **kwargs),
            _found(kwargs.get("config")),
            tool_call_id=call_id,
            arguments=tool_input,
            answer=lambda error: _answer(error, self._self_name, call_id),
            failed=_is_error,
        )

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """``BaseTool.arun`` behind the kill check."""
        call_id = kwargs.get("tool_call_id")
        return await self._self_gate.arun(
            self._self_name,
            lambda: self.__wrapped__.arun(tool_input, *args, **kwargs),
            _found(kwargs.get("config")),
            tool_call_id=call_id,
            arguments=tool_input,
            answer=lambda error: _answer(error, self._self_name, call_id),
            failed=_is_error,
        )

    def __copy__(self) -> GuardedTool:
        return GuardedTool(copy.copy(self.__wrapped__), self._self_gate)

    def __deepcopy__(self, memo: dict[int, Any]) -> GuardedTool:
        return GuardedTool(copy.deepcopy(self.__wrapped__, memo), self._self_gate)


def _rebound(name: str) -> Callable[..., Any]:
    def method(self: GuardedTool, *args: Any, **kwargs: Any) -> Any:
        return getattr(type(self.__wrapped__), name)(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"The tool's own ``{name}``, reaching it through the guarded ``run``."
    return method


for _name in _REBOUND:
    setattr(GuardedTool, _name, _rebound(_name))


def guard_tool(
    tool: BaseTool | Callable[..., Any],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> BaseTool:
    """Return ``tool`` guarded; a plain function is first made a tool with ``@tool``."""
    gate = Gate(
        guard, on_block=on_block, cancel_in_flight=cancel_in_flight, where="guard_tool", **ids
    )
    if isinstance(tool, GuardedTool):
        return tool
    if not isinstance(tool, BaseTool):
        if not callable(tool):
            raise InvalidInputError(
                "tool", f"must be a BaseTool or a function; got {type(tool).__name__}"
            )
        tool = _as_tool(tool)
    return GuardedTool(tool, gate)  # type: ignore[return-value]


def guard_tools(
    tools: Iterable[BaseTool | Callable[..., Any]],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> list[BaseTool]:
    """Return the tools guarded, in order (tools already guarded are kept as they are)."""
    scope_of(ids, "guard_tools", validate=False)  # a misspelt keyword, even with no tools
    return [
        guard_tool(t, guard, on_block=on_block, cancel_in_flight=cancel_in_flight, **ids)
        for t in tools
    ]


def unguard_tools(tools: Iterable[BaseTool]) -> list[BaseTool]:
    """Undo ``guard_tools``: the original tool objects."""
    return [t.__wrapped__ if isinstance(t, GuardedTool) else t for t in tools]


class AgentGuardMiddleware(AgentMiddleware):
    """``create_agent`` middleware refusing tool calls (and, with ``models=True``, model
    calls) while any of their targets is killed."""

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        cancel_in_flight: bool = True,
        models: bool = False,
        prices: Prices | PriceTable | None = None,
        **ids: Unpack[Ids],
    ) -> None:
        """``models``: guard the agent's model calls too, pricing their usage with ``prices``."""
        gate = Gate(
            guard,
            on_block=on_block,
            cancel_in_flight=cancel_in_flight,
            where="AgentGuardMiddleware",
            **ids,
        )
        if not isinstance(models, bool):
            raise InvalidInputError("models", f"must be True or False; got {models!r}")
        if prices is not None and not models:
            raise InvalidInputError("prices", "prices model calls: pass models=True with it")
        self._models = (
            ModelGate(guard, prices=prices, where="AgentGuardMiddleware", **ids) if models else None
        )
        super().__init__()
        self._gate = gate

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    @property
    def on_block(self) -> OnBlock:
        return self._gate.on_block

    @property
    def models(self) -> bool:
        """Whether model calls are guarded too."""
        return self._models is not None

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> Any:
        """Check the model call (``models=True``), make it and record its usage."""
        gate = self._models
        if gate is None:
            return handler(request)
        try:
            call = gate.check(_model_name(request.model), _found(None))
        except PolicyViolationError as error:
            return self._stopped(error)
        try:
            response = handler(request)
        except Exception as exc:
            call.finish(error_type=type(exc).__name__)
            raise
        call.finish(_usage(response))
        return response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        """Check the model call (``models=True``), make it and record its usage."""
        gate = self._models
        if gate is None:
            return await handler(request)
        try:
            call = await gate.acheck(_model_name(request.model), _found(None))
        except PolicyViolationError as error:
            return self._stopped(error)
        try:
            response = await handler(request)
        except Exception as exc:
            call.finish(error_type=type(exc).__name__)
            raise
        call.finish(_usage(response))
        return response

    def _stopped(self, error: PolicyViolationError) -> AIMessage:
        """A refused model call: raised, or answered with the agent's last message."""
        if self._gate.on_block == "message":
            return AIMessage(content=stopped_reply(error))
        raise error

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Any:
        """Check the call, then run it (or answer with the refusal)."""
        call = request.tool_call
        call_id = call.get("id")
        return self._gate.run(
            call["name"],
            lambda: handler(request),
            _found(_config_of(request)),
            tool_call_id=call_id,
            arguments=call.get("args"),
            answer=lambda error: _answer(error, call["name"], call_id),
            failed=_is_error,
        )

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        """Check the call, then run it (or answer with the refusal)."""
        call = request.tool_call
        call_id = call.get("id")
        return await self._gate.arun(
            call["name"],
            lambda: handler(request),
            _found(_config_of(request)),
            tool_call_id=call_id,
            arguments=call.get("args"),
            answer=lambda error: _answer(error, call["name"], call_id),
            failed=_is_error,
        )


def _found(config: Mapping[str, Any] | None) -> Scope:
    """The run's ids: the agent's ``name`` and the ``thread_id``."""
    if config is None:
        config = var_child_runnable_config.get()
    if not config:
        return Scope()
    metadata = config.get("metadata") or _EMPTY
    thread_id = (config.get("configurable") or _EMPTY).get("thread_id")
    if thread_id is None:
        thread_id = metadata.get("thread_id")
    return Scope(_id(metadata.get("lc_agent_name")), _id(thread_id))


def _id(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None


def _model_name(model: Any) -> str | None:
    """The name a chat model calls its model by (``ChatOpenAI.model_name``, ``.model``, ...)."""
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return None


def _usage(response: ModelResponse[Any]) -> Usage | None:
    """The token usage of a model call: the ``usage_metadata`` of its ``AIMessage``."""
    for message in reversed(response.result):
        usage = getattr(message, "usage_metadata", None)
        if isinstance(message, AIMessage) and usage:
            details = usage.get("input_token_details") or _EMPTY
            meta = message.response_metadata or _EMPTY
            model = meta.get("model_name") or meta.get("model")
            response_id = meta.get("id")
            return Usage(
                input_tokens=usage.get("input_tokens") or 0,
                output_tokens=usage.get("output_tokens") or 0,
                cached_input_tokens=details.get("cache_read") or 0,
                cache_write_input_tokens=details.get("cache_creation") or 0,
                model=model if isinstance(model, str) and model else None,
                response_id=response_id if isinstance(response_id, str) else None,
            )
    return None


def _config_of(request: ToolCallRequest) -> Mapping[str, Any] | None:
    return getattr(request.runtime, "config", None)


def _is_error(result: Any) -> bool:
    return isinstance(result, ToolMessage) and result.status == "error"


def _answer(error: PolicyViolationError, name: str, tool_call_id: str | None) -> Any:
    """What the model sees instead of the tool's output."""
    if tool_call_id is None:
        return refusal_text(error)
    return ToolMessage(
        content=refusal_text(error), name=name, tool_call_id=tool_call_id, status="error"
    )
