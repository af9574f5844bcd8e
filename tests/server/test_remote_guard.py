"""The core's remote guard in strict mode against a real server process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from harness import bearer

from agentguard import AlreadyKilledError, Guard, PolicyViolationError
from agentguard.server import KillSwitchServer


def test_strict_remote_guard_against_uvicorn(start_uvicorn: Any, database_url: str) -> None:
    setup = KillSwitchServer(database_url)
    agent_key = setup.create_key("org_a", owner="usr_bot", scopes=["agent"])
    operator_key = setup.create_key("org_a", owner="usr_ops", scopes=["operator"])
    setup.close()
    process = start_uvicorn(database_url)
    guard = Guard(process.url, api_key=agent_key, mode="strict", agent_id="email-campaign")
    operator = Guard(process.url, api_key=operator_key, mode="strict")
    sent: list[int] = []

    @guard.guarded_action
    def send_email(n: int) -> None:
        sent.append(n)

    send_email(1)
    ks = operator.kill("agent", "email-campaign", reason="broken link")
    with pytest.raises(AlreadyKilledError):
        operator.kill("agent", "email-campaign")
    with pytest.raises(PolicyViolationError) as caught:
        send_email(2)
    assert caught.value.reason == "broken link"
    assert caught.value.killed_at == ks.killed_at  # the seed /check carries no killed_by
    # The agent's key cannot revive its own agent.
    with pytest.raises(Exception, match="operator"):
        guard.revive("agent", "email-campaign")
    operator.revive("agent", "email-campaign")
    send_email(3)
    assert sent == [1, 3]
    assert guard.flush()
    blocks = httpx.get(
        f"{process.url}/api/v1/interventions", headers=bearer(operator_key), timeout=5
    ).json()["data"]
    assert [(b["type"], b["target_id"], b["reason"]) for b in blocks] == [
        ("HARD_BLOCK", "email-campaign", "broken link")
    ]
    guard.close()
    operator.close()


def test_kill_and_revive_answer_with_the_version(server: Any, api: Any) -> None:
    a = api(server)
    assert a.kill("agent", "a").headers["x-agentguard-version"] == "1"
    assert a.kill("agent", "b").headers["x-agentguard-version"] == "2"
    assert a.revive("agent", "a").headers["x-agentguard-version"] == "3"
    assert "x-agentguard-version" not in a.kill("agent", "b").headers  # 409
