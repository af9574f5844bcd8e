"""Guard CrewAI agents' tool calls.

Usage::

    from crewai import Agent, Crew, Task
    from agentguard.integrations.crewai import install, uninstall

    install(guard=guard)       # every CrewAI agent's tool calls in this process
    crew.kickoff()             # a refused call ends the run with the PolicyViolationError
    uninstall()                # CrewAI's tool calls unguarded again

``install`` registers a CrewAI tool-call hook pair (``InterceptionPoint.PRE_TOOL_CALL`` and
``POST_TOOL_CALL``): the agents, their tools, names and schemas stay exactly as they are, and
each tool call an agent makes (native function calling or ReAct text) is checked before CrewAI
runs the tool. The action is the tool's name as the model calls it (CrewAI's sanitised name,
e.g. ``send_email``). Installing again replaces the settings; hooks are process-wide.

Scope: ids fixed here win, then ``agentguard.scope(...)``, then CrewAI's — the calling agent's
``role`` is the agent id, and the run's execution id the run id (``crewai.execution``: one per
outermost ``Crew.kickoff``/``Agent.kickoff``/``Flow.kickoff``, shared by nested kickoffs; bind
your own with ``crewai.execution.set_execution_uuid`` before the kickoff).

``on_block="raise"`` (default): the refused call never runs and ``kickoff`` raises the
``PolicyViolationError``. CrewAI turns a tool's exception into a message for the model and
retries a failed task, so the error is raised from the post-call hook as a
``CrewAIPolicyViolationError``: a ``PolicyViolationError`` that is also CrewAI's ``HookAborted``,
which CrewAI's tool error handling and task retries pass through as a deliberate stop.
``on_block="message"``: the model gets the refusal, naming the kill and its reason, as the
tool's result, and the run goes on.

A tool body that raises, or returns CrewAI's ``ToolFailure``, counts as failed (``install`` also
wraps ``BaseTool.run``, ``Tool.run`` and ``CrewStructuredTool.invoke`` to see the exception
CrewAI would otherwise turn into text). CrewAI runs the tool when a hook raises anything but
``HookAborted``, so a check that cannot be made (no guard configured) aborts the call and ends
the run with a ``HookAborted`` caused by that error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import wrapt

from ..errors import KillStateUnavailableError, PolicyViolationError, _rebuild_violation
from ..scope import Scope
from ._gate import Admitted, Gate, OnBlock, Patches, missing, refusal_text

try:
    from crewai.execution import get_execution_uuid
    from crewai.hooks.dispatch import (
        HookAborted,
        InterceptionPoint,
        get_global_hook_list,
        unregister,
    )
    from crewai.hooks.tool_hooks import ToolCallHookContext
    from crewai.tools.tool_failure import ToolFailure
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("crewai", "CrewAI", "crewai") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "CrewAIKillStateUnavailableError",
    "CrewAIPolicyViolationError",
    "KillSwitchHooks",
    "install",
    "uninstall",
]

R = TypeVar("R")


# HookAborted.reason is a str; ours is the kill's reason, maybe None, which CrewAI reads only
# as an optional telemetry field (HookDispatchedEvent.abort_reason).
class CrewAIPolicyViolationError(PolicyViolationError, HookAborted):  # type: ignore[misc]
    """A ``PolicyViolationError`` CrewAI lets out of ``kickoff`` as a deliberate stop."""

    source: Any = None  # HookAborted's: CrewAI sets the hook that raised it

    def __reduce__(self) -> Any:
        state = {k: v for k, v in self.__dict__.items() if k != "source"}
        return (_rebuild_violation, (state,))


class CrewAIKillStateUnavailableError(  # type: ignore[misc]
    CrewAIPolicyViolationError, KillStateUnavailableError
):
    """A ``KillStateUnavailableError`` CrewAI lets out of ``kickoff`` as a deliberate stop."""


class _CrewGate(Gate):
    """The gate, raising refusals as the subclass CrewAI passes through."""

    __slots__ = ()

    def refused(
        self, error: PolicyViolationError, answer: Callable[[PolicyViolationError], R] | None
    ) -> R:
        if answer is None or self.on_block == "raise":
            unavailable = isinstance(error, KillStateUnavailableError)
            error.__class__ = (
                CrewAIKillStateUnavailableError if unavailable else CrewAIPolicyViolationError
            )
        return super().refused(error, answer)


class _Call:
    """One tool call between its two hooks: admitted (and whether its body failed) or not."""

    __slots__ = ("tool_input", "admitted", "refusal", "error", "failed", "outer")

    def __init__(self, tool_input: Any, outer: _Call | None) -> None:
        self.tool_input = tool_input  # the dict both hooks of one call share
        self.outer = outer  # the call whose tool body runs this one (a delegation), if any
        self.admitted: Admitted | None = None
        self.refusal: PolicyViolationError | None = None
        self.error: Exception | None = None  # the check itself failed (no guard configured...)
        self.failed = False


# The tool call in progress in this context. CrewAI runs a call's two hooks and its body in one
# context (parallel native calls each in a copy of it), so no lock and no call id are needed.
_CALL: ContextVar[_Call | None] = ContextVar("agentguard_crewai_call", default=None)


class KillSwitchHooks:
    """CrewAI's tool-call hooks that check each call against the kill state."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def before_tool_call(self, context: ToolCallHookContext) -> None:
        """Admit the call, or abort it (CrewAI then skips the tool body)."""
        call = _Call(context.tool_input, _CALL.get())
        _CALL.set(call)
        try:
            call.admitted = self.gate.check(
                context.tool_name, _found(context), arguments=context.tool_input
            )
        except PolicyViolationError as error:
            call.refusal = error
            raise HookAborted(str(error), source="agentguard") from None
        except Exception as error:  # CrewAI runs the tool past any other error: fail closed
            call.error = error
            raise HookAborted(str(error), source="agentguard") from None

    def after_tool_call(self, context: ToolCallHookContext) -> str | None:
        """Answer or raise a refusal; count a failed body."""
        call = _CALL.get()
        if call is None or call.tool_input is not context.tool_input:
            return None  # not a call this hook saw
        _CALL.set(call.outer)
        if call.error is not None:
            raise HookAborted(str(call.error), source="agentguard") from call.error
        if call.refusal is not None:
            answer: str = self.gate.refused(call.refusal, refusal_text)
            return answer  # replaces CrewAI's "Tool execution blocked by hook"
        if call.admitted is not None and (
            call.failed or isinstance(context.raw_tool_result, ToolFailure)
        ):
            call.admitted.failed()
        return None


@wrapt.decorator
def _watch_body(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """A tool body's outcome, for the call in progress (CrewAI turns exceptions into text)."""
    call = _CALL.get()
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except Exception:
        call.failed = True
        raise
    call.failed = False  # CrewAI's ReAct path retries a raising tool; the last try counts
    return result


# Where CrewAI runs tool bodies: native function calls (BaseTool.run, or Tool.run for @tool
# functions) and ReAct actions (CrewStructuredTool.invoke, which calls the tool's _run).
_BODIES = (
    "crewai.tools.base_tool:BaseTool.run",
    "crewai.tools.base_tool:Tool.run",
    "crewai.tools.structured_tool:CrewStructuredTool.invoke",
)
_patches = Patches()
_lock = threading.Lock()
_installed: KillSwitchHooks | None = None


def install(
    guard: Guard | None = None,
    *,
    on_block: OnBlock = "raise",
    **ids: Unpack[Ids],
) -> KillSwitchHooks:
    """Check every CrewAI tool call in this process (again: replace the settings)."""
    global _installed
    gate = _CrewGate(guard, on_block=on_block, where="install", **ids)
    with _lock:
        hooks = _installed or KillSwitchHooks(gate)
        hooks.gate = gate  # in place: no call slips through unguarded while settings change
        for target in _BODIES:
            _patches.apply(target, _watch_body)
        before = get_global_hook_list(InterceptionPoint.PRE_TOOL_CALL)
        if hooks.before_tool_call not in before:
            before.insert(0, hooks.before_tool_call)  # before the user's hooks act on a call
        after = get_global_hook_list(InterceptionPoint.POST_TOOL_CALL)
        if hooks.after_tool_call not in after:
            after.append(hooks.after_tool_call)  # after theirs have seen a refused call
        _installed = hooks
    return hooks


def uninstall() -> bool:
    """Remove the hooks and wrappers ``install`` added; return whether they were there."""
    global _installed
    with _lock:
        hooks, _installed = _installed, None
        if hooks is None:
            return False
        unregister(InterceptionPoint.PRE_TOOL_CALL, hooks.before_tool_call)
        unregister(InterceptionPoint.POST_TOOL_CALL, hooks.after_tool_call)
        for target in _BODIES:
            _patches.undo(target)
    return True


def _found(context: ToolCallHookContext) -> Scope:
    """CrewAI's ids: the calling agent's role and the run's execution id."""
    role = getattr(context.agent, "role", None)
    agent_id = (role.strip() or None) if isinstance(role, str) else None
    return Scope(agent_id, get_execution_uuid() or None)
