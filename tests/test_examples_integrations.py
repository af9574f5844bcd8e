"""The integration examples run as-is and tell the story they promise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_autogen_agent() -> None:
    out = run_example("autogen_agent.py")
    assert "PolicyViolationError from the team: agent 'refund_bot': Refund loop" in out
    assert "HARD_BLOCK for 'refund' (agent 'refund_bot', run 'ticket-881')" in out
    assert "refund_bot: executed=1 refused=1" in out
    run_1 = out.split("revived; run 2:")[0]
    assert "refunded A-2" not in run_1 and "Told again." not in run_1  # the team stopped
    assert out.count("refunded A-2") == 1 and "agent says: Refunded A-2." in out  # after revive
    assert "model was told: Error: 'refund' refused: tool 'refund' was killed by usr_ops" in out
    assert "refunded B-1" not in out and "agent says: Refunds are paused." in out


def test_google_adk_agent() -> None:
    out = run_example("google_adk_agent.py")
    assert "refunded A-1" in out and "refunded A-2" not in out
    assert (
        "run_async raised PolicyViolationError: run 'ticket-881': Refund loop on one ticket"
    ) in out
    assert "HARD_BLOCK for 'refund' (agent 'refund_bot', run 'ticket-881', call call-2)" in out
    assert "agent says: I could not refund: Error: 'refund' refused: run 'ticket-881'" in out
    revived = out.split("revived:")[1]
    assert "refunded A-3" in revived and "agent says: All refunds done." in revived
    assert out.count("refunded A-3") == 1  # refused before the revive, refunded after it
    assert "2 HARD_BLOCK interventions recorded" in out


def test_openai_client() -> None:
    out = run_example("openai_client.py")
    assert "ticket 3: 'Refund issued. Sorry!' (spent so far $0.0720)" in out
    assert "ticket 4: REFUSED before sending: spent $0.07 in 3600 s; limit $0.05" in out
    assert "model calls sent: 3; refused: 4" in out
    assert "HARD_BLOCK recorded for 'llm' on model 'gpt-5', killed by rule:support-spend" in out


def test_anthropic_client() -> None:
    out = run_example("anthropic_client.py")
    assert "scraper-bot step 2: Done. (spent $0.0420)" in out
    assert "scraper-bot step 3: REFUSED before sending (Looping on one page)" in out
    assert "research-bot step 3: Done. (spent $0.0630)" in out
    assert "messages sent: 5; total spend $0.1050" in out
    assert "HARD_BLOCK recorded for 'llm' on model 'claude-sonnet-4-5'" in out


def test_pydantic_ai_agent() -> None:
    out = run_example("pydantic_ai_agent.py")
    assert "PolicyViolationError from Agent.run: agent 'refund-bot': Refund loop" in out
    assert "CANCELLED for 'refund' (agent 'refund-bot', run 'ticket-881', call call-2)" in out
    assert "refund-bot: executed=2 cancelled=1 refused=0" in out
    assert out.count("refunded A-2") == 1 and "agent says: Refunded A-2." in out  # after revive
    assert "model was told: Error: 'refund' refused: run 'ticket-990' was killed by usr_ops" in out
    assert "refunded B-1" not in out
    assert "interventions recorded: CANCELLED, HARD_BLOCK" in out


def test_smolagents_agent() -> None:
    out = run_example("smolagents_agent.py")
    assert "PolicyViolationError from agent.run: agent 'refund_bot': Refund loop" in out
    assert "HARD_BLOCK for 'refund' (agent 'refund_bot')" in out
    assert "refund_bot: executed=2 refused=1" in out
    # run 1 ended at the refusal, so run 2 gets the rest of the script and refunds A-2 once
    assert out.count("refunded A-2") == 1 and "agent says: Refunded A-2." in out
    assert "model was told: Error: 'refund' refused: tool 'refund' was killed by usr_ops" in out
    assert "refunded B-1" not in out and "agent says: Refunds are paused." in out
    assert "2 HARD_BLOCK interventions recorded" in out


def test_llama_index_agent() -> None:
    out = run_example("llama_index_agent.py")
    assert "PolicyViolationError from the run: agent 'refund-bot': Refund loop" in out
    assert "CANCELLED for 'refund' (agent 'refund-bot', run 'ticket-881')" in out
    assert "refund-bot: executed=2 cancelled=1 refused=0" in out
    assert out.count("refunded A-2") == 1 and "agent says: Last tool said: refunded" in out
    assert "Last tool said: Error: 'refund' refused: tool 'refund' was killed by usr_ops" in out
    assert "refunded B-1" not in out
    assert "interventions recorded: CANCELLED, HARD_BLOCK" in out


def test_crewai_agent() -> None:
    if importlib.util.find_spec("crewai") is None:
        pytest.skip("CrewAI is not in this venv (it cannot share one with `all`): make test-crewai")
    out = run_example("crewai_agent.py")
    assert "refunded A-1" in out and "refunded A-2" not in out and "refunded A-3" not in out
    assert (
        "crew.kickoff() raised PolicyViolationError: agent 'Refund Agent': "
        "Refund loop on one ticket"
    ) in out
    assert "HARD_BLOCK for 'refund' (agent 'Refund Agent', run 'ticket-881')" in out
    told = "model was told: Error: 'refund' refused: agent 'Refund Agent' was killed by usr_ops"
    assert told in out
    assert "crew says: I was stopped by an operator, so I refunded nothing." in out
    assert "revived; 2 HARD_BLOCK interventions; refunded ['A-1']" in out
