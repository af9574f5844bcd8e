"""See a HARD_BLOCK inside your agent's own trace.

An agent span wraps two tool calls; the agent is killed between them. The console exporter
prints the agent's span and, as its child, the `execute_tool send_email` span of the block.

    python examples/tracing.py
"""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from agentguard import Guard, PolicyViolationError, scope


def one_line(span: ReadableSpan) -> str:
    """Compact console output: name, ids, parent, status and the agentguard attributes."""
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    attrs = {
        k: v for k, v in (span.attributes or {}).items() if k.startswith(("agentguard.", "gen_ai."))
    }
    return (
        f"span {span.name!r} id={span.context.span_id:016x} parent={parent} "
        f"status={span.status.status_code.name}\n"
        + "".join(f"    {k} = {v}\n" for k, v in attrs.items())
    )


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
tracer = provider.get_tracer("email-agent")

guard = Guard(tracer_provider=provider)


@guard.guarded_action(name="send_email")
def send_email(to: str) -> str:
    return f"sent to {to}"


with tracer.start_as_current_span("invoke_agent email-campaign") as agent_span:
    with scope(agent_id="email-campaign", run_id="run-42"):
        print(send_email("a@example.com"))
        guard.kill("agent", "email-campaign", reason="Broken link in template", actor="usr_abc")
        try:
            send_email("b@example.com")
        except PolicyViolationError as e:
            print(f"agent stopped: {e}")

provider.shutdown()
