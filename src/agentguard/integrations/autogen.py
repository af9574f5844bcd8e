"""Guard AutoGen AgentChat tools.

Usage::

    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.ui import Console
    from agentguard.integrations.autogen import guard_agent, guard_tools, stop_on_refusal

    agent = AssistantAgent("mailer", model_client=client, tools=[send_email])
    guard_agent(agent, guard=guard)        # its workbenches, with its name as the agent id
    await Console(stop_on_refusal(agent, task="mail everyone"))  # a refusal ends the run
    unguard_agent(agent)                   # its original workbenches again

    tools = guard_tools([FunctionTool(send_email, "Send an email.")], guard=guard)
    workbench = guard_workbench(StaticWorkbench(tools), guard=guard, agent_id="mailer")

A guarded tool is a proxy of the ``BaseTool`` (``isinstance`` still holds; name, description
and schema are the tool's own) whose ``run_json`` (and ``run_json_stream``) checks the kill
state before the tool body runs. A guarded workbench is a proxy of the ``Workbench`` (the same
tools listed) whose ``call_tool`` (and ``call_tool_stream``) checks each call first.
``guard_agent`` guards an ``AssistantAgent``'s workbenches in place: the one it builds from
``tools=`` and any passed as ``workbench=``.

Scope: ids fixed here win, then ``agentguard.scope(...)``, then the agent's ``name`` (through
``guard_agent``). A tool or workbench guarded alone does not learn its agent: pass
``agent_id=``. AutoGen has no run id of its own: pass ``run_id=`` or use ``agentguard.scope``.

``on_block="raise"`` (default): a guarded tool raises the ``PolicyViolationError``, and
AutoGen's workbench turns it into an error result for the model (a workbench must not raise:
``AssistantAgent`` then waits for the tool's result forever, so a guarded workbench answers
with the error result itself). ``stop_on_refusal(agent_or_team, task=...)`` runs
``run_stream`` and, at the first refusal, cancels the run (its ``CancellationToken``, which
also stops a team's other agents) and raises the ``PolicyViolationError``. Without it the run
goes on, every further call of a killed tool refused.
``on_block="message"``: the model reads the refusal, naming the kill and its reason, as the
tool's result, and the run goes on. A tool body that raises, or a workbench's error result,
counts as failed.

Not guarded: handoffs (``AssistantAgent`` runs them itself, outside its workbenches), the code
a ``CodeExecutorAgent`` runs, model calls, and the tools of an ``AgentTool``'s own agent
unless that agent is guarded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..scope import EMPTY_SCOPE, Scope, scope_of
from ._gate import Gate, OnBlock, missing, refusal_text

try:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.base import TaskResult, TaskRunner
    from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
    from autogen_core import CancellationToken
    from autogen_core.tools import BaseTool, StreamTool, TextResultContent, ToolResult, Workbench
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("autogen", "AutoGen AgentChat", "autogen") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "GuardedStreamTool",
    "GuardedTool",
    "GuardedWorkbench",
    "Refusal",
    "guard_agent",
    "guard_tool",
    "guard_tools",
    "guard_workbench",
    "stop_on_refusal",
    "unguard_agent",
    "unguard_tools",
    "unguard_workbench",
]

Event = BaseAgentEvent | BaseChatMessage | TaskResult

# The raise-mode refusals of each stop_on_refusal run, by the run's token (AutoGen hands the
# same CancellationToken to every tool call of a run, in a team too).
_runs: weakref.WeakKeyDictionary[CancellationToken, list[PolicyViolationError]] = (
    weakref.WeakKeyDictionary()
)
# The call (tool name, call id) a guarded workbench has just admitted: the guarded tool it runs
# does not check it again, and clears it, so calls its body makes are checked as usual.
_admitted: ContextVar[tuple[str, str] | None] = ContextVar("agentguard_autogen", default=None)


class Refusal(str):
    """A refused call's answer to the model (``on_block="message"``)."""


class GuardedTool(wrapt.BaseObjectProxy[Any]):
    """An AutoGen tool whose every run is checked against the kill state first."""

    def __init__(self, tool: BaseTool[Any, Any], gate: Gate) -> None:
        super().__init__(tool)
        self._self_gate = gate

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        """Check the call, then run the tool (or answer with the refusal)."""
        tool = self.__wrapped__
        if _checked(tool.name, call_id):
            return await tool.run_json(args, cancellation_token, call_id=call_id)
        try:
            return await self._self_gate.arun(
                tool.name,
                lambda: tool.run_json(args, cancellation_token, call_id=call_id),
                tool_call_id=call_id,
                arguments=args,
                answer=_answer,
            )
        except PolicyViolationError as error:
            _report(cancellation_token, error)
            raise

    def return_value_as_string(self, value: Any) -> str:
        if isinstance(value, Refusal):
            return str(value)
        result: str = self.__wrapped__.return_value_as_string(value)
        return result


class GuardedStreamTool(GuardedTool):
    """A guarded ``StreamTool`` (an ``AgentTool``, a ``TeamTool``): its stream is checked too."""

    async def run_json_stream(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Check the call, then stream the tool's results (or answer with the refusal)."""
        tool = self.__wrapped__
        if not _checked(tool.name, call_id):
            gate = self._self_gate
            try:
                admitted = await gate.acheck(tool.name, tool_call_id=call_id, arguments=args)
            except PolicyViolationError as error:
                if gate.on_block == "raise":
                    _report(cancellation_token, error)
                yield gate.refused(error, _answer)
                return
            try:
                async for item in tool.run_json_stream(args, cancellation_token, call_id=call_id):
                    yield item
            except Exception:
                admitted.failed()
                raise
            return
        async for item in tool.run_json_stream(args, cancellation_token, call_id=call_id):
            yield item


class GuardedWorkbench(wrapt.BaseObjectProxy[Any]):
    """An AutoGen workbench whose every tool call is checked against the kill state first."""

    def __init__(self, workbench: Workbench, gate: Gate, found: Scope = EMPTY_SCOPE) -> None:
        super().__init__(workbench)
        self._self_gate = gate
        self._self_found = found  # the agent's name, from guard_agent

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Check the call, then call the tool; a refusal is an error result."""
        try:
            admitted = await self._self_gate.acheck(
                name, self._self_found, tool_call_id=call_id, arguments=arguments
            )
        except PolicyViolationError as error:
            return self._self_refused(name, error, cancellation_token)
        marked = _admitted.set((name, call_id)) if call_id is not None else None
        try:
            result: ToolResult = await self.__wrapped__.call_tool(
                name, arguments, cancellation_token, call_id
            )
        except Exception:
            admitted.failed()
            raise
        finally:
            if marked is not None:
                _admitted.reset(marked)
        if result.is_error:
            admitted.failed()
        return result

    async def call_tool_stream(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Check the call, then stream the tool's events and result."""
        try:
            admitted = await self._self_gate.acheck(
                name, self._self_found, tool_call_id=call_id, arguments=arguments
            )
        except PolicyViolationError as error:
            yield self._self_refused(name, error, cancellation_token)
            return
        marked = _admitted.set((name, call_id)) if call_id is not None else None
        try:
            async for item in self.__wrapped__.call_tool_stream(
                name, arguments, cancellation_token, call_id
            ):
                if isinstance(item, ToolResult) and item.is_error:
                    admitted.failed()
                yield item
        except Exception:
            admitted.failed()
            raise
        finally:
            if marked is not None:
                with contextlib.suppress(ValueError):  # closed from another context
                    _admitted.reset(marked)

    def _self_refused(
        self, name: str, error: PolicyViolationError, token: CancellationToken | None
    ) -> ToolResult:
        # Never raised: AssistantAgent waits forever for a workbench call that raises.
        if self._self_gate.on_block == "raise":
            _report(token, error)
        return ToolResult(
            name=name, result=[TextResultContent(content=refusal_text(error))], is_error=True
        )


def guard_tool(
    tool: BaseTool[Any, Any],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> BaseTool[Any, Any]:
    """Return ``tool`` guarded (a tool already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_tool", **ids)
    if isinstance(tool, GuardedTool):
        return tool
    if not isinstance(tool, BaseTool):
        raise InvalidInputError("tool", f"must be an AutoGen BaseTool; got {type(tool).__name__}")
    kind = GuardedStreamTool if isinstance(tool, StreamTool) else GuardedTool
    return cast(BaseTool[Any, Any], kind(tool, gate))  # a proxy: isinstance(_, type(tool))


def guard_tools(
    tools: Iterable[BaseTool[Any, Any]],
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> list[BaseTool[Any, Any]]:
    """Return the tools guarded, in order."""
    scope_of(ids, "guard_tools", validate=False)  # a misspelt keyword, even with no tools
    return [guard_tool(t, guard, on_block=on_block, **ids) for t in tools]


def unguard_tools(tools: Iterable[Any]) -> list[Any]:
    """Undo ``guard_tools``: the original tool objects."""
    return [t.__wrapped__ if isinstance(t, GuardedTool) else t for t in tools]


def guard_workbench(
    workbench: Workbench,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> Workbench:
    """Return ``workbench`` guarded (a workbench already guarded is returned as it is)."""
    gate = Gate(guard, on_block=on_block, where="guard_workbench", **ids)
    return _guarded(workbench, gate)


def _guarded(workbench: Workbench, gate: Gate, found: Scope = EMPTY_SCOPE) -> Workbench:
    if isinstance(workbench, GuardedWorkbench):
        return workbench
    if not isinstance(workbench, Workbench):
        raise InvalidInputError(
            "workbench", f"must be an AutoGen Workbench; got {type(workbench).__name__}"
        )
    return cast(Workbench, GuardedWorkbench(workbench, gate, found))


def unguard_workbench(workbench: Workbench) -> Workbench:
    """Undo ``guard_workbench``: the original workbench."""
    if isinstance(workbench, GuardedWorkbench):
        original: Workbench = workbench.__wrapped__
        return original
    return workbench


def guard_agent(
    agent: AssistantAgent,
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> AssistantAgent:
    """Guard every workbench of ``agent`` in place (its ``name`` is the agent id unless one is
    given). Returns the agent."""
    gate = Gate(guard, on_block=on_block, where="guard_agent", **ids)
    if not isinstance(agent, AssistantAgent):
        raise InvalidInputError(
            "agent", f"must be an AutoGen AssistantAgent; got {type(agent).__name__}"
        )
    found = Scope(agent.name)
    # AssistantAgent reads its workbenches from this list at every turn and has no public
    # setter; a guarded agent already guarded keeps its guarded workbenches.
    workbenches: Sequence[Workbench] = agent._workbench  # noqa: SLF001
    agent._workbench = [_guarded(wb, gate, found) for wb in workbenches]  # noqa: SLF001
    return agent


def unguard_agent(agent: AssistantAgent) -> AssistantAgent:
    """Undo ``guard_agent``: the agent's original workbenches."""
    workbenches: Sequence[Workbench] = agent._workbench  # noqa: SLF001
    agent._workbench = [unguard_workbench(wb) for wb in workbenches]  # noqa: SLF001
    return agent


async def stop_on_refusal(
    runner: TaskRunner,
    *,
    task: str | BaseChatMessage | Sequence[BaseChatMessage] | None = None,
    cancellation_token: CancellationToken | None = None,
    output_task_messages: bool = True,
) -> AsyncGenerator[Event, None]:
    """``runner.run_stream(...)`` (an agent's or a team's), but at the first refusal of a
    guarded call (``on_block="raise"``) cancel the run and raise the ``PolicyViolationError``."""
    token = cancellation_token or CancellationToken()
    refusals = _runs.setdefault(token, [])
    stream = runner.run_stream(
        task=task, cancellation_token=token, output_task_messages=output_task_messages
    )
    refused: PolicyViolationError | None = None
    try:
        async for event in stream:
            if refusals:
                break
            yield event
        if refusals:
            refused = refusals[0]
            token.cancel()  # a team's other agents stop too
    finally:
        _runs.pop(token, None)
        await _close(stream, quiet=refused is not None)
    if refused is not None:
        raise refused


def _checked(name: str, call_id: str | None) -> bool:
    """Whether a guarded workbench admitted this very call (then forget it)."""
    if call_id is None or _admitted.get() != (name, call_id):
        return False
    _admitted.set(None)  # in the tool's own context: its workbench resets its own mark
    return True


def _answer(error: PolicyViolationError) -> Refusal:
    return Refusal(refusal_text(error))


def _report(token: CancellationToken | None, error: PolicyViolationError) -> None:
    """Tell the run's ``stop_on_refusal`` (if it has one) about a raise-mode refusal."""
    refusals = _runs.get(token) if token is not None else None
    if refusals is not None:
        refusals.append(error)


async def _close(stream: AsyncGenerator[Any, None], *, quiet: bool) -> None:
    """Close a run's stream; ``quiet``: what a cancelled run raises while it stops is dropped."""
    try:
        await stream.aclose()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not quiet or (task is not None and task.cancelling()):
            raise
    except Exception:
        if not quiet:
            raise
