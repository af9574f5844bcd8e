"""OpenTelemetry spans and metrics: only on the refuse path and for operator actions."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import semconv as sc
from ._version import __version__
from .errors import PolicyViolationError
from .pricing import Usage
from .records import Intervention, KillChange
from .scope import Scope

logger = logging.getLogger("agentguard")

MAX_ARGUMENTS_LENGTH = 1024


class Method(NamedTuple):
    """The function of a method whose calls pass the instance (or class) first, unrecorded."""

    function: Any


class Telemetry:
    """Spans and instruments of one guard or server; a no-op without an OpenTelemetry SDK."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        capture_arguments: bool = False,
    ) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider)
        meter = metrics.get_meter(__name__, __version__, meter_provider)
        self.capture_arguments = capture_arguments
        self.interventions = meter.create_counter(
            "agentguard.interventions",
            unit="{intervention}",
            description="Recorded interventions (refused or stopped guarded calls)",
        )
        self.changes = meter.create_counter(
            "agentguard.kill_switch.changes", unit="{change}", description="Kills and revives"
        )
        self.propagation = meter.create_histogram(
            "agentguard.kill_switch.propagation",
            unit="ms",
            description="Time from a kill's commit until an instance acknowledged applying it",
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Input and output tokens of guarded model calls",
        )
        self._meter = meter
        self._active_sources: list[Callable[[], int]] = []
        self._meter.create_observable_gauge(
            "agentguard.kill_switch.active",
            callbacks=[self._observe_active],
            unit="{kill_switch}",
            description="Active kill switches in this process's view",
        )

    def watch_active(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the active-kill-switch gauge."""
        self._active_sources.append(count)

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        for count in self._active_sources:
            try:
                yield Observation(count())
            except Exception:
                logger.exception("agentguard: could not observe active kill switches")

    def record_block(
        self,
        error: PolicyViolationError,
        intervention: Intervention,
        *,
        span_name: str | None = None,
        arguments: Any = None,
    ) -> None:
        """Emit the HARD_BLOCK span (a child of the current span) and count it. Never raises.

        For a call stopped while it ran (``error.ran_for``), the CANCELLED span covers the
        time it ran.
        """
        try:
            self.interventions.add(
                1,
                {
                    sc.INTERVENTION_TYPE: intervention.type.value,
                    sc.TARGET_TYPE: intervention.target_type,
                    sc.ACTION: intervention.action,
                },
            )
            name = span_name or f"{sc.OPERATION_EXECUTE_TOOL} {intervention.action}"
            ran_for = error.ran_for
            start = None if ran_for is None else time.time_ns() - int(ran_for * 1e9)
            with self.tracer.start_as_current_span(
                name,
                kind=SpanKind.INTERNAL,
                start_time=start,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                if span.is_recording():
                    span.set_attributes(
                        self._block_attributes(error, intervention, arguments, span_name)
                    )
                    span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error.reason or error)))
        except Exception:  # our telemetry must never break the user's agent
            logger.exception("agentguard: could not record the %s span", intervention.type)

    def record_model_call(
        self,
        *,
        operation: str,
        model: str | None,
        provider: str | None,
        usage: Usage | None,
        cost_usd: float | None,
        scope: Scope,
        action: str,
        start_ns: int,
        parent: Context | None = None,
        error_type: str | None = None,
    ) -> None:
        """Emit the span of one admitted model call (GenAI conventions: ``chat gpt-5``, tokens,
        cost) from ``start_ns`` until now, and count its tokens. Never raises."""
        try:
            common: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: operation}
            if provider:
                common[sc.GEN_AI_PROVIDER_NAME] = provider
            if model:
                common[sc.GEN_AI_REQUEST_MODEL] = model
            if usage is not None and usage.model:
                common[sc.GEN_AI_RESPONSE_MODEL] = usage.model
            if usage is not None:
                for kind, tokens in (
                    (sc.TOKEN_TYPE_INPUT, usage.input_tokens),
                    (sc.TOKEN_TYPE_OUTPUT, usage.output_tokens),
                ):
                    self.token_usage.record(tokens, {**common, sc.GEN_AI_TOKEN_TYPE: kind})
            span = self.tracer.start_span(
                f"{operation} {model}" if model else operation,
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=start_ns,
            )
            if span.is_recording():
                attributes = {**common, sc.ACTION: action}
                if usage is not None:
                    attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
                    attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
                    if usage.cached_input_tokens:
                        attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = (
                            usage.cached_input_tokens
                        )
                    if usage.cache_write_input_tokens:
                        attributes[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = (
                            usage.cache_write_input_tokens
                        )
                    if usage.response_id:
                        attributes[sc.GEN_AI_RESPONSE_ID] = usage.response_id
                if cost_usd is not None:
                    attributes[sc.COST_USD] = cost_usd
                ids = {sc.AGENT_ID: scope.agent_id, sc.RUN_ID: scope.run_id}
                ids[sc.MISSION_ID] = scope.mission_id
                attributes.update({k: v for k, v in ids.items() if v is not None})
                if scope.agent_id is not None:
                    attributes[sc.GEN_AI_AGENT_ID] = scope.agent_id
                if error_type is not None:
                    attributes[sc.ERROR_TYPE] = error_type
                span.set_attributes(attributes)
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        except Exception:  # our telemetry must never break the user's agent
            logger.exception("agentguard: could not record the model call's span")

    def arguments(self, fn: Any, args: Any, kwargs: Any) -> Any:
        """What a refused call's span records of its arguments: ``None`` unless opted in.

        Bound to ``fn``'s parameters where there is one (``{'to': 'a@x', 'body': 'hi'}``);
        otherwise as given (an integration's arguments, or ``(args, kwargs)``).
        """
        if not self.capture_arguments:
            return None
        method = isinstance(fn, Method)
        if method:
            fn = fn.function
        if fn is not None:
            try:
                bound = dict(inspect.signature(fn).bind(*args, **(kwargs or {})).arguments)
            except (TypeError, ValueError):  # no signature, or arguments that do not fit it
                pass
            else:
                if method:  # the instance or class the method was called on
                    del bound[next(iter(bound))]
                return bound
        if method:
            args = args[1:]
        return (args, kwargs) if kwargs else args

    def _block_attributes(
        self, error: PolicyViolationError, iv: Intervention, arguments: Any, span_name: str | None
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OPERATION_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: iv.action,
        }
        if iv.model is not None:  # a model call: its span is named "{operation} {model}"
            operation = span_name.partition(" ")[0] if span_name else sc.OPERATION_CHAT
            attributes = {
                sc.GEN_AI_OPERATION_NAME: operation,
                sc.GEN_AI_REQUEST_MODEL: iv.model,
                sc.ACTION: iv.action,
            }
        attributes |= {
            sc.ERROR_TYPE: type(error).__name__,
            sc.INTERVENTION_TYPE: iv.type.value,
            sc.INTERVENTION_ID: iv.id,
            sc.TARGET_TYPE: iv.target_type,
            sc.TARGET_ID: iv.target_id,
        }
        optional = {
            sc.GEN_AI_TOOL_CALL_ID: iv.tool_call_id,
            sc.GEN_AI_AGENT_ID: iv.agent_id,
            sc.KILL_SWITCH_ID: iv.kill_switch_id,
            sc.KILLED_BY: iv.killed_by,
            sc.KILLED_AT: error.killed_at.isoformat() if error.killed_at else None,
            sc.REASON: iv.reason,
            sc.AGENT_ID: iv.agent_id,
            sc.RUN_ID: iv.run_id,
            sc.MISSION_ID: iv.mission_id,
            sc.INSTANCE_ID: iv.instance_id,
            sc.RAN_FOR_MS: iv.ran_for_ms,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        if self.capture_arguments and arguments is not None:
            attributes[sc.ARGUMENTS] = repr(arguments)[:MAX_ARGUMENTS_LENGTH]
        return attributes

    def record_propagation(self, latency_ms: float, *, target_type: str) -> None:
        """Record how long one instance took to apply a kill. Never raises."""
        try:
            self.propagation.record(latency_ms, {sc.TARGET_TYPE: target_type})
        except Exception:
            logger.exception("agentguard: could not record the propagation time")

    def record_change(self, change: KillChange, *, actor: str) -> None:
        """Emit the span of an operator's kill or revive and count it. Never raises."""
        try:
            ks = change.kill_switch
            self.changes.add(1, {sc.CHANGE_KIND: change.kind, sc.TARGET_TYPE: ks.target_type})
            with self.tracer.start_as_current_span(
                f"agentguard.{change.kind}", kind=SpanKind.INTERNAL
            ) as span:
                if span.is_recording():
                    span.set_attributes(
                        {
                            sc.ACTOR: actor,
                            sc.TARGET_TYPE: ks.target_type,
                            sc.TARGET_ID: ks.target_id,
                            sc.KILL_SWITCH_ID: ks.id,
                            sc.VERSION: change.version,
                            **({sc.REASON: ks.reason} if ks.reason else {}),
                            **({sc.EXPIRES_AT: ks.expires_at.isoformat()} if ks.expires_at else {}),
                        }
                    )
        except Exception:
            logger.exception("agentguard: could not record the %s span", change.kind)
