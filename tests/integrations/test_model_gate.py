"""The shared model-call gate: check before, usage, cost, failure and span after."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import agentguard
from agentguard import AgentGuardWarning, BudgetRule, PolicyViolationError
from agentguard.integrations._model import ModelGate
from agentguard.pricing import Price, Usage
from support import eventually

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

PRICES = {"gpt-5": Price(1.25, 10.0, cached_input=0.125)}


def test_a_model_call_is_the_action_llm_with_its_model(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    gate = ModelGate(guard, prices=PRICES, agent_id="bot")
    gate.check("gpt-5").finish()
    guard.kill("tool", "llm", reason="no more model calls")
    with pytest.raises(PolicyViolationError) as refused:
        gate.check("gpt-5", operation="chat")
    assert refused.value.action == "llm"
    iv = hard_block(guard)
    assert (iv.action, iv.model, iv.agent_id) == ("llm", "gpt-5", "bot")
    (block,) = spans.blocks()
    attrs = block.attributes or {}
    assert block.name == "chat gpt-5"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-5"
    assert attrs["agentguard.action"] == "llm"
    assert "gen_ai.tool.name" not in attrs
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.refused) == (1, 1)


async def test_acheck_refuses_a_killed_agent(make_guard: MakeGuard, hard_block: HardBlock) -> None:
    guard = make_guard()
    gate = ModelGate(guard, action="model")
    (await gate.acheck("claude-haiku-4-5", agentguard.Scope(agent_id="a"))).finish()
    guard.kill("agent", "a")
    with pytest.raises(PolicyViolationError):
        await gate.acheck("claude-haiku-4-5", agentguard.Scope(agent_id="a"))
    assert hard_block(guard).action == "model"


def test_ids_fixed_on_the_gate_win_then_scope_then_the_framework(make_guard: MakeGuard) -> None:
    guard = make_guard()
    found = agentguard.Scope(agent_id="framework", run_id="thread-1")
    with agentguard.scope(agent_id="scoped"):
        assert ModelGate(guard).check("m", found).scope == agentguard.Scope("scoped", "thread-1")
        fixed = ModelGate(guard, agent_id="fixed").check("m", found)
        assert fixed.scope == agentguard.Scope("fixed", "thread-1")
    assert ModelGate(guard).check("m", found).scope == found


def test_finish_turns_tokens_into_cost_span_and_metrics(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    gate = ModelGate(guard, prices=PRICES, provider="openai", agent_id="bot", run_id="r1")
    with spans.tracer.start_as_current_span("agent step") as step:
        call = gate.check("gpt-5")
    usage = Usage(1000, 200, cached_input_tokens=400, model="gpt-5-2025-08-07", response_id="x1")
    cost = call.finish(usage)
    assert cost == pytest.approx((600 * 1.25 + 400 * 0.125 + 200 * 10.0) / 1e6)
    assert call.finish(usage) is None  # once
    assert guard.cost("run", "r1") == pytest.approx(cost)
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    attrs = span.attributes or {}
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == step.get_span_context().span_id
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-5"
    assert attrs["gen_ai.response.model"] == "gpt-5-2025-08-07"
    assert attrs["gen_ai.response.id"] == "x1"
    assert attrs["gen_ai.usage.input_tokens"] == 1000
    assert attrs["gen_ai.usage.output_tokens"] == 200
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 400
    assert attrs["agentguard.cost_usd"] == pytest.approx(cost)
    assert (attrs["agentguard.agent.id"], attrs["agentguard.run.id"]) == ("bot", "r1")
    assert span.status.status_code is not StatusCode.ERROR


def test_a_failed_call_counts_as_failed_and_marks_its_span(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    gate = ModelGate(guard)
    gate.check("gpt-5").finish(error_type="503")
    gate.check("gpt-5").finish(failed=True)
    gate.check("gpt-5").finish()
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (3, 2)
    errors = [
        (s.attributes or {}).get("error.type")
        for s in spans.exporter.get_finished_spans()
        if s.status.status_code is StatusCode.ERROR
    ]
    assert errors == ["503", "_OTHER"]


def test_a_budget_rule_trips_on_token_usage_alone(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard(rules=[BudgetRule("model-spend", limit_usd=0.05)])
    gate = ModelGate(guard, prices=PRICES, agent_id="bot")
    for _ in range(2):  # 2 x $0.0325: the second goes over $0.05
        gate.check("gpt-5").finish(Usage(input_tokens=10_000, output_tokens=2_000))
    with pytest.raises(PolicyViolationError) as refused:
        gate.check("gpt-5")
    assert refused.value.killed_by == "rule:model-spend"
    assert "limit $0.05" in (refused.value.reason or "")
    assert hard_block(guard).model == "gpt-5"
    eventually(lambda: guard.check("agent", "bot").is_killed, 5)


def test_an_unpriced_model_records_tokens_without_cost_and_warns_once(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    gate = ModelGate(guard, prices={"gpt-5": (1.25, 10.0)}, agent_id="bot")
    with pytest.warns(AgentGuardWarning, match="no price for model 'local-llama'"):
        assert gate.check("local-llama").finish(Usage(50, 5)) is None
    assert gate.check("local-llama").finish(Usage(50, 5)) is None  # no second warning
    assert guard.total_cost() == 0
    tokens = [
        (s.attributes or {}).get("gen_ai.usage.input_tokens")
        for s in spans.exporter.get_finished_spans()
    ]
    assert tokens == [50, 50]
    assert "agentguard.cost_usd" not in (spans.exporter.get_finished_spans()[0].attributes or {})


def test_without_a_price_table_tokens_are_recorded_and_no_cost_counted(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    assert ModelGate(guard).check("gpt-5").finish(Usage(50, 5)) is None  # and no warning
    assert guard.total_cost() == 0
    (span,) = spans.exporter.get_finished_spans()
    assert (span.attributes or {})["gen_ai.usage.output_tokens"] == 5


def test_the_response_model_is_priced_before_the_requested_alias(make_guard: MakeGuard) -> None:
    guard = make_guard()
    gate = ModelGate(guard, prices={"fast": (1.0, 1.0), "fast-v2-2026": (2.0, 2.0)})
    cost = gate.check("fast").finish(Usage(1_000_000, 0, model="fast-v2-2026"))
    assert cost == pytest.approx(2.0)
    cost = gate.check("fast").finish(Usage(1_000_000, 0, model="unlisted"))
    assert cost == pytest.approx(1.0)


def test_the_check_itself_records_nothing(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    call = ModelGate(guard).check("gpt-5")
    assert spans.exporter.get_finished_spans() == ()
    time.sleep(0.001)
    call.finish()
    (span,) = spans.exporter.get_finished_spans()
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time >= 1_000_000  # from the check to finish


def test_bad_gate_options_name_the_field() -> None:
    with pytest.raises(agentguard.InvalidInputError, match="action"):
        ModelGate(action="")
    with pytest.raises(TypeError, match="agnet_id"):
        ModelGate(agnet_id="x")  # type: ignore[call-arg]


def test_tokens_feed_the_gen_ai_token_usage_histogram() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    with agentguard.Guard(meter_provider=MeterProvider(metric_readers=[reader])) as guard:
        gate = ModelGate(guard, provider="anthropic")
        gate.check("claude-haiku-4-5").finish(Usage(120, 30, model="claude-haiku-4-5-20251001"))
    data = reader.get_metrics_data()
    assert data is not None
    (usage,) = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.token.usage"
    ]
    assert usage.unit == "{token}"
    points = {p.attributes["gen_ai.token.type"]: p for p in usage.data.data_points}  # type: ignore[index]
    assert (points["input"].sum, points["output"].sum) == (120, 30)
    attrs = points["input"].attributes or {}
    assert attrs["gen_ai.request.model"] == "claude-haiku-4-5"
    assert attrs["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
    assert attrs["gen_ai.provider.name"] == "anthropic"
