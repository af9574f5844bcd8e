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

    plain = unguard_tools(tools)                               # the original tools again

A guarded tool is a ``wrapt`` proxy: still an instance of ``BaseTool`` and of its own class,
with the same name, description, ``args_schema`` and ``tool_call_schema``, so ``bind_tools``,
``ToolNode`` and ``create_agent`` see the tool they always saw. Use one of the two (tools or
middleware) per agent, not both.

Scope: ids fixed here win, then ``agentguard.scope(...)``, then the run's config — the
``thread_id`` is the run id and the agent's ``name`` (``lc_agent_name``) the agent id.

``on_block="raise"`` (default) stops the run with ``PolicyViolationError``. It is not a
``ToolException``, so a tool's ``handle_tool_error`` does not turn it into a message, and
``create_agent``'s default tool-error handling re-raises it. (A ``ToolNode`` you build yourself
with ``handle_tool_errors=True`` catches every exception; use ``on_block="message"`` there.)
``on_block="message"`` answers the model with an error ``ToolMessage`` naming the kill and its
reason, and the run goes on.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import wrapt

from ..actions import get_guard
from ..errors import InvalidInputError, PolicyViolationError
from ..scope import Scope, current_scope

try:
    from langchain.agents.middleware import AgentMiddleware, ToolCallRequest
    from langchain_core.messages import ToolMessage
    from langchain_core.runnables.config import var_child_runnable_config
    from langchain_core.tools import BaseTool
    from langchain_core.tools import tool as _as_tool
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise ImportError(
        'agentguard.integrations.langchain needs LangChain: pip install "agentguard[langchain]"'
    ) from exc

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["AgentGuardMiddleware", "GuardedTool", "guard_tool", "guard_tools", "unguard_tools"]

OnBlock = Literal["raise", "message"]
_EMPTY: Mapping[str, Any] = {}

# Runnable entry points that reach the tool through ``self.run``/``self.arun`` or wrap
# ``self`` in a new runnable: run with the proxy as ``self`` so the check cannot be bypassed.
_REBOUND = (
    "invoke", "ainvoke", "stream", "astream", "batch", "abatch", "batch_as_completed",
    "abatch_as_completed", "transform", "atransform", "astream_events", "astream_log",
    "with_config", "bind", "with_retry", "with_fallbacks", "with_listeners", "with_alisteners",
    "with_types", "pipe", "__or__", "__ror__",
)


class GuardedTool(wrapt.BaseObjectProxy[BaseTool]):
    """A LangChain tool refused while its agent, run, mission or name is killed."""

    def __init__(
        self, tool: BaseTool, guard: Guard | None, on_block: OnBlock, fixed: Scope
    ) -> None:
        super().__init__(tool)
        self._self_guard = guard
        self._self_on_block = on_block
        self._self_fixed = fixed
        self._self_name = tool.name

    def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """``BaseTool.run`` behind the kill check."""
        guard = self._self_guard or get_guard()
        key = _admit(
            guard, self._self_on_block, self._self_name, self._self_fixed,
            kwargs.get("config"), kwargs.get("tool_call_id"), tool_input,
        )
        if key.__class__ is _Refused:
            return key.output
        try:
            return self.__wrapped__.run(tool_input, *args, **kwargs)
        except Exception:
            guard.count_failure(key)
            raise

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """``BaseTool.arun`` behind the kill check."""
        guard = self._self_guard or get_guard()
        key = await _admit_async(
            guard, self._self_on_block, self._self_name, self._self_fixed,
            kwargs.get("config"), kwargs.get("tool_call_id"), tool_input,
        )
        if key.__class__ is _Refused:
            return key.output
        try:
            return await self.__wrapped__.arun(tool_input, *args, **kwargs)
        except Exception:
            guard.count_failure(key)
            raise

    def __copy__(self) -> GuardedTool:
        return GuardedTool(
            copy.copy(self.__wrapped__), self._self_guard, self._self_on_block, self._self_fixed
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> GuardedTool:
        return GuardedTool(
            copy.deepcopy(self.__wrapped__, memo),
            self._self_guard,
            self._self_on_block,
            self._self_fixed,
        )


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
    agent_id: str | None = None,
    run_id: str | None = None,
    mission_id: str | None = None,
) -> BaseTool:
    """Return ``tool`` guarded; a plain function is first made a tool with ``@tool``."""
    _check_on_block(on_block)
    if isinstance(tool, GuardedTool):
        return tool
    if not isinstance(tool, BaseTool):
        if not callable(tool):
            raise InvalidInputError(
                "tool", f"must be a BaseTool or a function; got {type(tool).__name__}"
            )
        tool = _as_tool(tool)
    fixed = Scope(agent_id, run_id, mission_id)
    return GuardedTool(tool, guard, on_block, fixed)  # type: ignore[return-value]


def guard_tools(
    tools: Iterable[BaseTool | Callable[..., Any]],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    agent_id: str | None = None,
    run_id: str | None = None,
    mission_id: str | None = None,
) -> list[BaseTool]:
    """Return the tools guarded, in order (tools already guarded are kept as they are)."""
    ids = {"agent_id": agent_id, "run_id": run_id, "mission_id": mission_id}
    return [guard_tool(t, guard, on_block=on_block, **ids) for t in tools]


def unguard_tools(tools: Iterable[BaseTool]) -> list[BaseTool]:
    """Undo ``guard_tools``: the original tool objects."""
    return [t.__wrapped__ if isinstance(t, GuardedTool) else t for t in tools]


class AgentGuardMiddleware(AgentMiddleware):
    """``create_agent`` middleware refusing tool calls while any of their targets is killed."""

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> None:
        _check_on_block(on_block)
        super().__init__()
        self.guard = guard
        self.on_block: OnBlock = on_block
        self._fixed = Scope(agent_id, run_id, mission_id)

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Any:
        """Check the call, then run it (or answer with the refusal)."""
        call = request.tool_call
        guard = self.guard or get_guard()
        key = _admit(
            guard, self.on_block, call["name"], self._fixed,
            _config_of(request), call.get("id"), call.get("args"),
        )
        if key.__class__ is _Refused:
            return key.output
        try:
            return handler(request)
        except Exception:
            guard.count_failure(key)
            raise

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        """Check the call, then run it (or answer with the refusal)."""
        call = request.tool_call
        guard = self.guard or get_guard()
        key = await _admit_async(
            guard, self.on_block, call["name"], self._fixed,
            _config_of(request), call.get("id"), call.get("args"),
        )
        if key.__class__ is _Refused:
            return key.output
        try:
            return await handler(request)
        except Exception:
            guard.count_failure(key)
            raise


class _Refused:
    """The answer the model gets instead of the tool's output (``on_block="message"``)."""

    __slots__ = ("output",)

    def __init__(self, output: Any) -> None:
        self.output = output


def _admit(
    guard: Guard,
    on_block: OnBlock,
    name: str,
    fixed: Scope,
    config: Mapping[str, Any] | None,
    tool_call_id: str | None,
    arguments: Any,
) -> Any:
    """Check one call: its count key if allowed, a ``_Refused`` answer, or raise."""
    try:
        return guard.enforce(
            name, **_ids(fixed, config), tool_call_id=tool_call_id, arguments=arguments
        )
    except PolicyViolationError as error:
        if on_block == "raise":
            raise
        return _Refused(_refused_output(error, name, tool_call_id))


async def _admit_async(
    guard: Guard,
    on_block: OnBlock,
    name: str,
    fixed: Scope,
    config: Mapping[str, Any] | None,
    tool_call_id: str | None,
    arguments: Any,
) -> Any:
    """``_admit`` without blocking the event loop (``Guard.enforce_async``)."""
    try:
        return await guard.enforce_async(
            name, **_ids(fixed, config), tool_call_id=tool_call_id, arguments=arguments
        )
    except PolicyViolationError as error:
        if on_block == "raise":
            raise
        return _Refused(_refused_output(error, name, tool_call_id))


def _ids(fixed: Scope, config: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The call's ids: the fixed ones, then ``agentguard.scope``, then the run config."""
    s = current_scope()
    agent_id = fixed.agent_id or s.agent_id
    run_id = fixed.run_id or s.run_id
    if agent_id is None or run_id is None:
        if config is None:
            config = var_child_runnable_config.get()
        if config:
            metadata = config.get("metadata") or _EMPTY
            if agent_id is None:
                agent_id = _id(metadata.get("lc_agent_name"))
            if run_id is None:
                thread_id = (config.get("configurable") or _EMPTY).get("thread_id")
                run_id = _id(thread_id if thread_id is not None else metadata.get("thread_id"))
    return {"agent_id": agent_id, "run_id": run_id, "mission_id": fixed.mission_id or s.mission_id}


def _id(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None


def _config_of(request: ToolCallRequest) -> Mapping[str, Any] | None:
    return getattr(request.runtime, "config", None)


def _refused_output(error: PolicyViolationError, name: str, tool_call_id: str | None) -> Any:
    """What the model sees instead of the tool's output."""
    content = f"Error: {error}"
    if tool_call_id is None:
        return content
    return ToolMessage(content=content, name=name, tool_call_id=tool_call_id, status="error")


def _check_on_block(on_block: str) -> None:
    if on_block not in ("raise", "message"):
        raise InvalidInputError("on_block", f"must be 'raise' or 'message'; got {on_block!r}")
