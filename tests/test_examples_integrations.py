"""The integration examples run as-is and tell the story they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_functions_registry() -> None:
    out = run_example("functions_registry.py")
    assert "step 2: send_email -> email sent to ann@example.com" in out
    assert (
        "step 3: send_email -> REFUSED (tool 'send_email': Mail provider flagged us as spam)"
    ) in out
    assert "step 4: search -> 3 articles about 'shipping times'" in out
    assert "2 HARD_BLOCK interventions: ['send_email']" in out
    assert "send_email: executed=1 refused=2" in out
    assert "after revive: email sent to cid@example.com" in out


def test_langchain_agent() -> None:
    out = run_example("langchain_agent.py")
    assert "run stopped: agent 'email-bot' killed by usr_abc: Broken link in template" in out
    assert "HARD_BLOCK recorded for 'send_email', run 'campaign-7', call call-3" in out
    resumed = out.split("resuming thread 'campaign-7' from its checkpoint:")[1]
    assert "sent to cid@example.com" in resumed and "agent says: Campaign done." in resumed
    assert out.count("sent to") == 3  # ann, bob, then cid after the revive; never dan
    assert "model was told: Error: 'send_email' refused: agent 'support-bot'" in out
    assert "agent says: I was stopped by an operator, so I sent nothing." in out


def test_asgi_gateway() -> None:
    out = run_example("asgi_gateway.py")
    assert 'billing-bot: 200 {"charged": true, "agent": "billing-bot"}' in out
    assert (
        'billing-bot: 403 {"target_type": "agent", "target_id": "billing-bot", '
        '"reason": "Drained $3k in 4 minutes", "killed_by": "usr_abc"}'
    ) in out
    assert "support-bot: 200" in out
    assert "1 HARD_BLOCK intervention(s), action 'gateway'" in out
    assert "after revive: billing-bot: 200" in out


def test_httpx_outbound() -> None:
    out = run_example("httpx_outbound.py")
    assert "scraper-bot step 2: REFUSED before sending (Hammering a partner API)" in out
    assert "scraper-bot step 3: REFUSED before sending" in out
    assert all(f"research-bot step {i}: 200" in out for i in (1, 2, 3))
    assert "requests that reached the outside world: 4" in out
    assert "HARD_BLOCK interventions: 2" in out


def test_openai_agents_tools() -> None:
    out = run_example("openai_agents_tools.py")
    assert "refunded A-1" in out and "refunded A-2" not in out
    assert (
        "Runner.run raised PolicyViolationError: run 'ticket-881': Refund loop on one ticket"
    ) in out
    assert "CANCELLED for 'refund' (agent 'refund-bot', call call-1) after " in out
    assert "model was told: Error: 'escalate' refused: run 'ticket-881'" in out
    assert "revived; interventions recorded: CANCELLED, HARD_BLOCK" in out


def test_mcp_server() -> None:
    out = run_example("mcp_server.py")
    assert "billing-bot: isError=False refunded A-1" in out
    assert "billing-bot: isError=True Error: 'refund' refused: agent 'billing-bot'" in out
    assert "support-bot: isError=False refunded B-1" in out
    assert "billing-bot: isError=False refunded A-3" in out
    assert "HARD_BLOCK recorded for 'refund': agent 'billing-bot', run 'billing-bot-run-1'" in out
