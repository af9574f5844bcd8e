"""The examples run as-is."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=timeout
    )


def test_email_campaign_demo_agrees_on_every_number() -> None:
    """The demo: a real server, three replica processes, a kill, acks, a revive, a resume."""
    import re

    started = time.monotonic()
    result = run_example("email_campaign.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    out = result.stdout
    assert "agentguard serve is up at http://127.0.0.1:" in out
    halted = re.search(r"All 3 replicas halted\. ([\d,]+) emails sent\. ([\d,]+) stopped\.", out)
    assert halted is not None, out
    sent, stopped = (int(n.replace(",", "")) for n in halted.groups())
    assert sent + stopped == 50_000 and 2_000 <= sent < 50_000
    assert f"({sent:,} emails), 3 calls refused; 3 HARD_BLOCK interventions; " in out
    assert f"the sink counted {sent:,} emails" in out
    assert "Kill acknowledged by 3/3 instances, slowest " in out
    assert "Campaign finished: 50,000 emails delivered, 500 batches executed" in out
    assert "agent exited." in out
    assert "OK: every number agrees." in out and "MISMATCH" not in out


def test_tracing_example_nests_the_block_in_the_agent_span() -> None:
    import re

    result = run_example("tracing.py")
    assert result.returncode == 0, result.stderr
    spans = dict(re.findall(r"span '([^']+)' id=\w+ parent=(\S+)", result.stdout))
    ids = dict(re.findall(r"span '([^']+)' id=(\w+)", result.stdout))
    assert spans["execute_tool send_email"] == ids["invoke_agent email-campaign"]
    assert "agentguard.intervention.type = HARD_BLOCK" in result.stdout
    assert "agent stopped: 'send_email' refused" in result.stdout
