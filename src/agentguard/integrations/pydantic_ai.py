"""Guard Pydantic AI tools and model requests.

Usage::

    from pydantic_ai import Agent, FunctionToolset
    from agentguard.integrations.pydantic_ai import (
        AgentGuardCapability, guard_toolset, unguard_toolset,
    )

    tools = guard_toolset(FunctionToolset([search, send_email]), guard=guard)
    agent = Agent("openai:gpt-5", name="support-bot", toolsets=[tools],
                  capabilities=[AgentGuardCapability(guard=guard, prices=LIST_PRICES_2025_11)])
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

Model requests: ``AgentGuardCapability`` is a capability whose ``wrap_model_request`` checks
each model request step of the agent (``run``, ``run_stream``, ``iter``, streamed or not) as
the action ``llm`` with the model's ``model_name``, before any attempt is sent, with the same
ids as the tools. ``on_block="raise"``: ``Agent.run`` raises the ``PolicyViolationError``;
``on_block="message"``: the step's response is a text saying the agent was stopped, naming the
kill and its reason, which ends a run whose output is text (one with a structured output type
asks again, and each request is refused: use ``"raise"`` there). The response's ``usage``
(``input_tokens``, ``output_tokens``, cache reads and writes) is priced with ``prices``, added
to the guard's cost so a ``BudgetRule`` trips on real spend, and recorded on a GenAI span; a
request that raises counts as failed. A step is checked once: the attempts a retry or fallback
capability makes inside it are not checked again, and only the answering attempt's usage is
counted. Capabilities wrap first-outermost: put this one first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PolicyViolationError
from ..pricing import Usage
from ..scope import Scope
from ._gate import Gate, OnBlock, check_on_block, missing, refusal_text
from ._model import ModelGate, stopped_reply

try:
    from pydantic_ai import RunContext
    from pydantic_ai.capabilities import AbstractCapability, WrapModelRequestHandler
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models import ModelRequestContext
    from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise missing("pydantic_ai", "Pydantic AI", "pydantic-ai") from exc

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..pricing import Prices, PriceTable
    from ..scope import Ids

__all__ = ["AgentGuardCapability", "GuardedToolset", "guard_toolset", "unguard_toolset"]


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


@dataclass(init=False)
class AgentGuardCapability(AbstractCapability[Any]):
    """A capability checking each model request of an agent against the kill state first,
    and recording its token usage and cost after."""

    gate: ModelGate
    on_block: OnBlock

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        prices: Prices | PriceTable | None = None,
        **ids: Unpack[Ids],
    ) -> None:
        super().__init__()
        self.on_block = check_on_block(on_block)
        self.gate = ModelGate(guard, prices=prices, where="AgentGuardCapability", **ids)

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: WrapModelRequestHandler,
    ) -> ModelResponse:
        """Check the request, send it (or answer with the refusal) and record its usage."""
        try:
            call = await self.gate.acheck(request_context.model.model_name or None, _found(ctx))
        except PolicyViolationError as error:
            if self.on_block == "message":
                return ModelResponse(parts=[TextPart(stopped_reply(error))])
            raise
        try:
            response = await handler(request_context)
        except Exception as exc:
            call.finish(error_type=type(exc).__name__)
            raise
        except BaseException:  # cancelled, or a compaction run ending: not the model's failure
            call.finish()
            raise
        call.finish(_usage(response))
        return response


def _usage(response: ModelResponse) -> Usage:
    """A response's token usage, as Pydantic AI reports it (cache tokens within input)."""
    usage = response.usage
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cache_read_tokens,
        cache_write_input_tokens=usage.cache_write_tokens,
        model=response.model_name or None,
        response_id=response.provider_response_id or None,
    )


def _found(ctx: RunContext[Any]) -> Scope:
    """The run's ids: the agent's ``name`` and the run's ``run_id``."""
    return Scope(getattr(ctx.agent, "name", None) or None, ctx.run_id or None)
