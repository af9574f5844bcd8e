"""Guard LlamaIndex tools.

Usage::

    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool
    from agentguard.integrations.llama_index import guard_tools, stop_on_refusal, unguard_tools

    tools = guard_tools([FunctionTool.from_defaults(send_email)], guard=guard, agent_id="mailer")
    agent = FunctionAgent(name="mailer", tools=tools, llm=llm)
    result = await stop_on_refusal(agent.run("mail everyone"))  # a refusal ends the run
    plain = unguard_tools(tools)                                   # the original tools again

A guarded tool is a proxy of the tool (``isinstance`` still holds, and name, description,
``fn_schema`` and context injection are the tool's own); ``call``, ``acall`` and calling it
check the kill state before the tool body runs.

Scope: ids fixed here win, then ``agentguard.scope(...)``. LlamaIndex does not tell a tool
which agent calls it, so pass the agent's name as ``agent_id=`` to have agent kills apply.

``on_block="raise"`` (default): ``call``/``acall`` raise the ``PolicyViolationError``. An agent
workflow (``FunctionAgent``, ``ReActAgent``, ``AgentWorkflow``) catches every exception a tool
raises and hands it to the model as ``ToolOutput(is_error=True, exception=error)``, so the run
goes on (each later call of a killed tool is refused too) until the model stops or
``max_iterations`` runs out. ``stop_on_refusal(handler)`` ends it instead: it cancels the run
at the first refusal and raises the ``PolicyViolationError`` itself.
``on_block="message"``: the refusal comes back as ``ToolOutput(is_error=True)`` whose content
names the kill and its reason, for the model to read. A tool body that raises, or returns an
error output, counts as failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import scope_of
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from llama_index.core.agent.workflow import ToolCallResult
    from llama_index.core.tools import BaseTool, ToolOutput, adapt_to_async_tool
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("llama_index", "LlamaIndex", "llama-index") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from workflows.handler import WorkflowHandler

    from ..guard import Guard
    from ..scope import Ids

__all__ = ["GuardedTool", "guard_tool", "guard_tools", "stop_on_refusal", "unguard_tools"]


class GuardedTool(wrapt.BaseObjectProxy[Any]):
    """A LlamaIndex tool whose every call is checked against the kill state first."""

    def __init__(self, tool: BaseTool, gate: Gate) -> None:
        super().__init__(tool)
        self._self_gate = gate
        self._self_async = adapt_to_async_tool(tool)  # the tool itself when it is async

    def __call__(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self._self_run(lambda: self.__wrapped__(*args, **kwargs), args, kwargs)

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self._self_run(lambda: self._self_async.call(*args, **kwargs), args, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Check the call (off the event loop for a strict guard), then run the tool."""
        return await self._self_gate.arun(
            self.__wrapped__.metadata.get_name(),
            lambda: self._self_async.acall(*args, **kwargs),
            arguments=self._self_arguments(args, kwargs),
            answer=self._self_answer,
            failed=_is_error,
        )

    def _self_run(self, body: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolOutput:
        output: ToolOutput = self._self_gate.run(
            self.__wrapped__.metadata.get_name(),
            body,
            arguments=self._self_arguments(args, kwargs),
            answer=self._self_answer,
            failed=_is_error,
        )
        return output

    def _self_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's arguments, without the workflow ``Context`` an agent injects."""
        context = getattr(self.__wrapped__, "ctx_param_name", None)
        if context is not None and context in kwargs:
            kwargs = {k: v for k, v in kwargs.items() if k != context}
        return kwargs if kwargs or not args else args[0] if len(args) == 1 else list(args)

    def _self_answer(self, error: PolicyViolationError) -> ToolOutput:
        return ToolOutput(
            content=refusal_text(error),
            tool_name=self.__wrapped__.metadata.get_name(),
            raw_input={},
            raw_output=None,
            is_error=True,  # no exception: stop_on_refusal lets an answered refusal pass
        )


def guard_tool(
    tool: BaseTool,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> BaseTool:
    """Return ``tool`` guarded (a tool already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_tool", **ids)
    if isinstance(tool, GuardedTool):
        return tool
    if not isinstance(tool, BaseTool):
        raise InvalidInputError("tool", f"must be a LlamaIndex BaseTool; got {type(tool).__name__}")
    return cast(BaseTool, GuardedTool(tool, gate))  # a proxy: isinstance(_, type(tool)) holds


def guard_tools(
    tools: Iterable[BaseTool],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> list[BaseTool]:
    """Return the tools guarded, in order."""
    scope_of(ids, "guard_tools", validate=False)  # a misspelt keyword, even with no tools
    return [guard_tool(t, guard, on_block=on_block, **ids) for t in tools]


def unguard_tools(tools: Iterable[Any]) -> list[Any]:
    """Undo ``guard_tools``: the original tool objects."""
    return [t.__wrapped__ if isinstance(t, GuardedTool) else t for t in tools]


async def stop_on_refusal(handler: WorkflowHandler) -> Any:
    """Await an agent run (``agent.run(...)``), but cancel it and raise the
    ``PolicyViolationError`` as soon as a guarded tool refuses a call."""
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            error = event.tool_output.exception
            if isinstance(error, PolicyViolationError):
                await handler.cancel_run()
                raise error
    return await handler


def _is_error(output: ToolOutput) -> bool:
    return bool(getattr(output, "is_error", False))
