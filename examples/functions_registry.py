"""Guard a home-grown agent's tool registry in one line.

A support agent works through its plan; the operator kills the `send_email` tool halfway.
Every later email is refused (searches go on), then the tool is revived.

    python examples/functions_registry.py
"""

from __future__ import annotations

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.functions import guard_registry


def search(query: str) -> str:
    return f"3 articles about {query!r}"


def send_email(to: str) -> str:
    return f"email sent to {to}"


guard = Guard()
TOOLS = guard_registry({"search": search, "send_email": send_email}, guard=guard)

plan = [
    ("search", "refund policy"),
    ("send_email", "ann@example.com"),
    ("send_email", "bob@example.com"),
    ("search", "shipping times"),
    ("send_email", "cid@example.com"),
]

with scope(agent_id="support-bot", run_id="run-42"):
    for step, (tool, argument) in enumerate(plan, 1):
        if step == 3:
            reason = "Mail provider flagged us as spam"
            guard.kill("tool", "send_email", reason=reason, actor="usr_ops")
            print("operator: killed tool 'send_email'")
        try:
            print(f"step {step}: {tool} -> {TOOLS[tool](argument)}")
        except PolicyViolationError as e:
            print(f"step {step}: {tool} -> REFUSED ({e.target_type} {e.target_id!r}: {e.reason})")

    blocks = guard.interventions()
    print(f"{len(blocks)} HARD_BLOCK interventions: {sorted({b.action for b in blocks})}")
    counts = guard.counts(action="send_email")
    print(f"send_email: executed={counts.executed} refused={counts.refused}")

    guard.revive("tool", "send_email", actor="usr_ops")
    print(f"after revive: {TOOLS['send_email']('cid@example.com')}")
guard.close()
