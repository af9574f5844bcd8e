"""Spans and metrics through the real OpenTelemetry SDK, providers passed explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentguard import Guard, PolicyViolationError, scope


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list:  # type: ignore[type-arg]
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def metric_points(self, name: str) -> list:  # type: ignore[type-arg]
        data = self.reader.get_metrics_data()
        points = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


def make_guard(otel: Telemetry, **kwargs: object) -> Guard:
    return Guard(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        instance_id="inst-1",
        **kwargs,  # type: ignore[arg-type]
    )


def test_allowed_calls_create_no_spans(otel: Telemetry) -> None:
    guard = make_guard(otel)

    @guard.guarded_action
    def tool(x: int) -> int:
        return x

    with scope(agent_id="a", run_id="r", mission_id="m"):
        for i in range(100):
            tool(i)
    assert otel.spans() == []
    assert otel.metric_points("agentguard.interventions") == []


def test_hard_block_span_is_a_child_of_the_agent_span(otel: Telemetry) -> None:
    guard = make_guard(otel)
    tracer = otel.tracer_provider.get_tracer("my-agent")

    @guard.guarded_action(name="send_email")
    def send(to: str, body: str) -> None: ...

    ks = guard.kill("agent", "bot", reason="Broken link", actor="usr_abc")
    otel.exporter.clear()
    with tracer.start_as_current_span("invoke_agent bot") as parent:
        with scope(agent_id="bot", run_id="r1", mission_id="m1"):
            with pytest.raises(PolicyViolationError) as info:
                send("a@x", body="secret body")
    (block,) = otel.spans("execute_tool send_email")
    assert block.kind is SpanKind.INTERNAL
    assert (
        block.status.status_code is StatusCode.ERROR and block.status.description == "Broken link"
    )
    assert block.parent is not None and block.parent.span_id == parent.get_span_context().span_id
    assert block.context.trace_id == parent.get_span_context().trace_id
    attrs = dict(block.attributes or {})
    assert attrs == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "send_email",
        "gen_ai.agent.id": "bot",
        "error.type": "PolicyViolationError",
        "agentguard.intervention.type": "HARD_BLOCK",
        "agentguard.intervention.id": info.value.intervention_id,
        "agentguard.target.type": "agent",
        "agentguard.target.id": "bot",
        "agentguard.kill_switch.id": ks.id,
        "agentguard.killed_by": "usr_abc",
        "agentguard.killed_at": ks.killed_at.isoformat(),
        "agentguard.reason": "Broken link",
        "agentguard.agent.id": "bot",
        "agentguard.run.id": "r1",
        "agentguard.mission.id": "m1",
        "agentguard.instance.id": "inst-1",
    }
    assert not any("secret" in str(v) for v in attrs.values())  # arguments are private by default
    (point,) = otel.metric_points("agentguard.interventions")
    assert point.value == 1 and point.attributes == {
        "agentguard.intervention.type": "HARD_BLOCK",
        "agentguard.target.type": "agent",
        "agentguard.action": "send_email",
    }


def test_arguments_recorded_only_when_opted_in_and_truncated(otel: Telemetry) -> None:
    guard = make_guard(otel, capture_arguments=True)

    @guard.guarded_action(agent_id="bot")
    def send(to: str, body: str) -> None: ...

    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        send("a@x", body="x" * 5000)
    (block,) = otel.spans("execute_tool send")
    recorded = block.attributes["agentguard.tool.arguments"]
    assert recorded.startswith("{'to': 'a@x', 'body': 'xxx") and len(recorded) == 1024


def test_captured_arguments_are_bound_to_parameter_names(otel: Telemetry) -> None:
    guard = make_guard(otel, capture_arguments=True)

    class Mailer:
        @guard.guarded_action(agent_id="bot")
        def send(self, to: str, cc: str = "", *rest: str, **headers: str) -> None: ...

        @guard.guarded_action(agent_id="bot")
        async def asend(self, to: str, body: str) -> None: ...

    @guard.guarded_action(agent_id="bot", name="fetch")
    def fetch(url: str, /, timeout: float = 1.0) -> None: ...

    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        Mailer().send("a@x", "b@x", "extra", subject="hi")
    with pytest.raises(PolicyViolationError):
        asyncio.run(Mailer().asend(to="c@x", body="hello"))
    with pytest.raises(PolicyViolationError):
        fetch("https://x", 5)
    with pytest.raises(PolicyViolationError):
        fetch("https://x", 5, 6)  # does not fit the signature: recorded as given
    recorded = [
        s.attributes["agentguard.tool.arguments"]
        for s in otel.spans()
        if s.name.startswith("execute_tool")
    ]
    assert recorded == [
        "{'to': 'a@x', 'cc': 'b@x', 'rest': ('extra',), 'headers': {'subject': 'hi'}}",
        "{'to': 'c@x', 'body': 'hello'}",
        "{'url': 'https://x', 'timeout': 5}",
        "('https://x', 5, 6)",
    ]


def test_enforce_and_integrations_can_name_the_span(otel: Telemetry) -> None:
    guard = make_guard(otel)
    guard.kill("tool", "fetch")
    with pytest.raises(PolicyViolationError):
        guard.enforce("fetch", tool_call_id="call_1", span_name="agentguard.gateway GET /x")
    (block,) = otel.spans("agentguard.gateway GET /x")
    assert block.attributes["gen_ai.tool.call.id"] == "call_1"


def test_kill_and_revive_emit_operator_spans_and_metrics(otel: Telemetry) -> None:
    guard = make_guard(otel)
    guard.kill("run", "r1", reason="loop", actor="usr_abc")
    guard.revive("run", "r1", actor="usr_def")
    kill, revive = otel.spans("agentguard.kill"), otel.spans("agentguard.revive")
    assert kill[0].attributes["agentguard.actor"] == "usr_abc"
    assert kill[0].attributes["agentguard.version"] == 1
    assert kill[0].attributes["agentguard.reason"] == "loop"
    assert revive[0].attributes["agentguard.actor"] == "usr_def"
    assert revive[0].attributes["agentguard.version"] == 2
    points = {
        p.attributes["agentguard.change.kind"]: p.value
        for p in otel.metric_points("agentguard.kill_switch.changes")
    }
    assert points == {"kill": 1, "revive": 1}


def test_a_time_limited_kill_span_says_when_it_expires(otel: Telemetry) -> None:
    guard = make_guard(otel)
    ks = guard.kill("agent", "a", duration="1h")
    (kill,) = otel.spans("agentguard.kill")
    assert ks.expires_at is not None
    assert kill.attributes["agentguard.kill_switch.expires_at"] == ks.expires_at.isoformat()


def test_active_gauge_observes_the_index(otel: Telemetry) -> None:
    guard = make_guard(otel)
    guard.kill("agent", "a")
    guard.kill("tool", "t")
    (point,) = otel.metric_points("agentguard.kill_switch.active")
    assert point.value == 2


def test_broken_tracer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenProvider(TracerProvider):
        def get_tracer(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def,override]
            raise_on_use = super().get_tracer(*args, **kwargs)

            class Tracer:
                def start_as_current_span(self, *a: object, **k: object) -> None:
                    raise RuntimeError("exporter exploded")

            return Tracer() if raise_on_use else None

    guard = Guard(tracer_provider=BrokenProvider())
    guard.kill("agent", "bot")  # span failure is logged
    with scope(agent_id="bot"):
        with pytest.raises(PolicyViolationError):  # the refusal itself still happens
            guard.enforce("act")
    assert "could not record the HARD_BLOCK span" in caplog.text
