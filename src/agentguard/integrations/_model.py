"""The gate model calls share: check a model call before it leaves, record its usage after.

Usage (a framework hook that sees each model request and its response)::

    from agentguard.integrations._model import ModelGate
    from agentguard.pricing import Usage

    gate = ModelGate(guard, prices={"gpt-5": (1.25, 10.0)}, provider="openai", agent_id="bot")

    call = gate.check("gpt-5")                 # raises PolicyViolationError when refused
    try:
        response = send(request)
    except Exception as exc:
        call.finish(error_type=type(exc).__name__)   # counted as failed
        raise
    call.finish(Usage(input_tokens=812, output_tokens=95, model=response.model))

    call = await gate.acheck("gpt-5", found)   # asyncio code; ``found``: the framework's ids

    call = gate.begin("gpt-5")                 # a call a kill stops while it runs (a stream)
    try:
        for chunk in read(call.flight):        # the reader checks call.flight (an inflight.Call)
            ...
    except BaseException as exc:
        raise call.fail(exc, usage_so_far)     # a kill's PolicyViolationError, or exc itself
    call.finish(usage)

A model call is the action ``llm`` (``action=`` changes it) carrying the model's name: a kill
of its agent, run or mission, or of the tool ``llm``, refuses it before it leaves, and the
HARD_BLOCK intervention and span name the model. The allowed path is the guard's own check:
no I/O, no lock, no span.

``ModelCall.finish`` records the outcome once (later calls do nothing): the tokens become a
cost through the price table (the response's model is priced first, then the requested one;
a model the table lacks records tokens and no cost, and warns once; with no table, no cost is
counted), the cost is added under the call's scope with ``Guard.add_cost`` (as
``report_metric`` adds it: ``BudgetRule``, heartbeats and the server see it), a failed call
(``failed=True`` or an ``error_type``) counts as failed, and one span in the OpenTelemetry
GenAI conventions (``chat gpt-5``, kind CLIENT, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.*``, ``agentguard.cost_usd``) covers the call from
check to finish, under the span that was current at the check. Apart from that warning,
``finish`` never raises: a failure to record is logged. Ids come as in ``Gate``: fixed on
the gate, then ``agentguard.scope``, then ``found``.

``begin``/``abegin`` admit a call that stays in flight until ``finish``: a kill stops it (see
:mod:`agentguard.inflight`; ``cancel_in_flight=False`` lets it run), and ``fail`` turns what
its request or body raised into the kill's ``PolicyViolationError``, recorded as CANCELLED
with the usage seen so far (the model span's ``error.type`` says it; it is not counted failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Unpack

from opentelemetry import context as otel_context

from .. import semconv as sc
from ..errors import PolicyViolationError
from ..inflight import KEY, Call
from ..pricing import Prices, PriceTable, Usage
from ..scope import EMPTY_SCOPE, Ids, Scope
from ..tally import CountKey
from ..targets import validate_id
from ._gate import Gate

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["LLM_ACTION", "ModelCall", "ModelGate", "stopped_reply"]

logger = logging.getLogger("agentguard")

LLM_ACTION = "llm"


def stopped_reply(error: PolicyViolationError) -> str:
    """The assistant's reply a framework hook puts in place of a refused model call
    (``on_block="message"``): it names the kill and its reason, and asks for no tool."""
    return f"Stopped: {error}"


class ModelGate:
    """One integration's guard for model calls: its guard, ids, action and price table."""

    __slots__ = ("gate", "prices", "action", "provider")

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        prices: Prices | PriceTable | None = None,
        action: str = LLM_ACTION,
        provider: str | None = None,
        cancel_in_flight: bool = True,
        where: str = "ModelGate",
        **ids: Unpack[Ids],
    ) -> None:
        """``provider`` is ``gen_ai.provider.name`` (``openai``, ``anthropic``); ``where``
        the public callable a misspelt id keyword is reported against; ``cancel_in_flight``
        applies to calls made with ``begin``/``abegin``."""
        self.gate = Gate(guard, cancel_in_flight=cancel_in_flight, where=where, **ids)
        self.prices = None if prices is None else Prices.of(prices)  # None: count no cost
        self.action = validate_id("action", action)
        self.provider = provider

    @property
    def guard(self) -> Guard | None:
        """The guard fixed on this gate (``None``: the configured default, at each call)."""
        return self.gate.guard

    def check(
        self, model: str | None, found: Scope = EMPTY_SCOPE, *, operation: str = sc.OPERATION_CHAT
    ) -> ModelCall:
        """Admit a call of ``model`` or raise ``PolicyViolationError``; ``finish`` it after."""
        guard = self.gate.resolve()
        span_name = f"{operation} {model}" if model else operation
        scope = self.gate.scope(found)
        try:
            key = guard.admit(self.action, scope, None, None, None, span_name, None, model)
        except PolicyViolationError as error:
            raise self.refused(error)  # noqa: B904 - the refusal itself, as the guard raised it
        return ModelCall(self, guard, key, model, operation)

    async def acheck(
        self, model: str | None, found: Scope = EMPTY_SCOPE, *, operation: str = sc.OPERATION_CHAT
    ) -> ModelCall:
        """``check`` for asyncio code: a strict guard asks its server off the event loop."""
        guard = self.gate.resolve()
        span_name = f"{operation} {model}" if model else operation
        scope = self.gate.scope(found)
        try:
            key = await guard.admit_async(
                self.action, scope, None, None, None, span_name, None, model
            )
        except PolicyViolationError as error:
            raise self.refused(error)  # noqa: B904 - the refusal itself, as the guard raised it
        return ModelCall(self, guard, key, model, operation)

    def begin(
        self, model: str | None, found: Scope = EMPTY_SCOPE, *, operation: str = sc.OPERATION_CHAT
    ) -> ModelCall:
        """``check``, the call registered in flight until ``finish``: a kill stops it."""
        guard = self.gate.resolve()
        span_name = f"{operation} {model}" if model else operation
        scope = self.gate.scope(found)
        cancel = self.gate.cancel_in_flight
        try:
            flight = guard.begin(
                self.action, scope, None, None, None, span_name, None, None, cancel, model
            )
        except PolicyViolationError as error:
            raise self.refused(error)  # noqa: B904 - the refusal itself, as the guard raised it
        return ModelCall(self, guard, flight[KEY], model, operation, Call(flight))

    async def abegin(
        self, model: str | None, found: Scope = EMPTY_SCOPE, *, operation: str = sc.OPERATION_CHAT
    ) -> ModelCall:
        """``begin`` for asyncio code: a kill cancels this task while it waits in the call."""
        guard = self.gate.resolve()
        span_name = f"{operation} {model}" if model else operation
        scope = self.gate.scope(found)
        cancel = self.gate.cancel_in_flight
        task = asyncio.current_task() if cancel else None
        try:
            flight = await guard.begin_async(
                self.action, scope, None, None, None, span_name, None, task, cancel, model
            )
        except PolicyViolationError as error:
            raise self.refused(error)  # noqa: B904 - the refusal itself, as the guard raised it
        return ModelCall(self, guard, flight[KEY], model, operation, Call(flight))

    def refused(self, error: PolicyViolationError) -> PolicyViolationError:
        """The refusal to raise (an adapter may give it a class its framework passes on)."""
        return error


class ModelCall:
    """An admitted model call; ``finish`` records its usage, cost and outcome once."""

    __slots__ = ("gate", "guard", "key", "model", "operation", "started", "parent", "finished",
                 "flight")  # fmt: skip

    def __init__(
        self,
        gate: ModelGate,
        guard: Guard,
        key: CountKey,
        model: str | None,
        operation: str,
        flight: Call | None = None,
    ) -> None:
        self.gate = gate
        self.guard = guard
        self.key = key  # (action, scope with the guard's defaults): what the call counts under
        self.model = model
        self.operation = operation
        self.started = time.time_ns()
        self.parent = otel_context.get_current()
        self.finished = False
        self.flight = flight  # the call in flight (``begin``), which a kill stops; else None

    @property
    def scope(self) -> Scope:
        return self.key[1]

    def fail(
        self, exc: BaseException, usage: Usage | None = None, failed: bool = False
    ) -> BaseException:
        """Finish a call whose request or body raised ``exc`` (with the ``usage`` seen so far)
        and return what to raise: the kill's ``PolicyViolationError`` if one stopped the call
        (recorded as CANCELLED), else ``exc`` (counted as failed if it is an ``Exception``)."""
        flight = self.flight
        if flight is not None and flight.stopped_by is not None:
            error = flight.finish(exc)
            if isinstance(error, PolicyViolationError) and error.cancelled:
                self.finish(usage, failed=failed, cancelled=True)
                return self.gate.refused(error)
        if isinstance(exc, Exception):
            self.finish(usage, failed=failed, error_type=type(exc).__name__)
        else:  # the caller closed the stream early, or the task was cancelled from outside
            self.finish(usage, failed=failed)
        return exc

    def finish(
        self,
        usage: Usage | None = None,
        *,
        failed: bool = False,
        error_type: str | None = None,
        cancelled: bool = False,
    ) -> float | None:
        """Record the call: tokens, cost (returned; ``None`` if unknown), failure, span.

        ``error_type`` (an HTTP status, an exception's name) marks the call failed and is the
        span's ``error.type``; ``cancelled``: a kill stopped it (counted as cancelled already,
        not failed). A second call does nothing and returns ``None``.
        """
        if self.finished:
            return None
        self.finished = True
        if self.flight is not None:
            self.flight.end()
        if cancelled:
            failed, error_type = False, None
        cost = None
        if usage is not None and (usage.input_tokens or usage.output_tokens):
            cost = self._cost(usage)  # may warn (once per model): outside the catch-all below
        try:
            guard, scope = self.guard, self.key[1]
            if failed or error_type is not None:
                guard.count_failure(self.key)
            if cancelled:
                error_type = PolicyViolationError.__name__
            if cost:
                guard.add_cost(scope, cost)
            guard.telemetry.record_model_call(
                operation=self.operation,
                model=self.model,
                provider=self.gate.provider,
                usage=usage,
                cost_usd=cost,
                scope=scope,
                action=self.key[0],
                start_ns=self.started,
                parent=self.parent,
                error_type=error_type or ("_OTHER" if failed else None),
            )
        except Exception:  # recording must never break the user's agent
            logger.exception("agentguard: could not record the %s call's usage", self.model)
        return cost

    def _cost(self, usage: Usage) -> float | None:
        prices = self.gate.prices
        if prices is None:
            return None
        if usage.model is not None and usage.model != self.model:
            price = prices.price(usage.model)
            if price is not None:
                return price.cost(usage)
        return prices.cost(self.model or usage.model, usage)
