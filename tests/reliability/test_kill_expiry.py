"""Time-limited kills across processes: two server replicas on one database revive an expired
kill once; a guard that is offline at expiry keeps refusing until it hears of the revive."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from agentguard import Guard, KillStateUnavailableError, PolicyViolationError
from support import eventually
from support.api import bearer
from support.reliability import Uvicorn, keys_for

TARGETS = [("agent", f"bot-{i}") for i in range(5)] + [("tool", "send_email"), ("run", "r-1")]


def _audit(url: str, key: str, action: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, headers=bearer(key)) as client:
        page = client.get("/api/v1/audit", params={"action": action, "limit": 1000}).json()
    return list(page["data"])


def test_expiry_across_two_replicas_fires_once(
    database_url: str,
    start_uvicorn: Callable[..., Uvicorn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both replicas look for expired kills every 20 ms: they race for every expiry.
    monkeypatch.setenv("AGENTGUARD_EXPIRY_INTERVAL", "0.02")
    keys = keys_for(database_url, "org_x", operator=["operator"], agent=["agent"])
    replicas = [start_uvicorn(database_url), start_uvicorn(database_url)]
    guard = Guard(replicas[1].url, api_key=keys["agent"], max_staleness=60)
    try:
        with httpx.Client(base_url=replicas[0].url, headers=bearer(keys["operator"])) as client:
            for target_type, target_id in TARGETS:
                body = {"target_type": target_type, "target_id": target_id, "duration": "1s"}
                assert client.post("/api/v1/kill-switch/kill", json=body).status_code == 200
        assert guard.wait_until_synced(10)
        eventually(lambda: len(guard.active()) == len(TARGETS), timeout=10)
        # Expired, and heard by the guard streaming from the other replica.
        eventually(lambda: guard.active() == [], timeout=15)
        revives = _audit(replicas[1].url, keys["operator"], "revive")
        assert sorted((e["target_type"], e["target_id"]) for e in revives) == sorted(TARGETS)
        assert {e["actor"] for e in revives} == {"expiry"}
        kills = _audit(replicas[0].url, keys["operator"], "kill")
        versions = sorted(e["version"] for e in kills + revives)
        assert versions == list(range(1, 2 * len(TARGETS) + 1))  # no second revive anywhere
        for replica in replicas:
            with httpx.Client(base_url=replica.url, headers=bearer(keys["operator"])) as client:
                assert client.get("/api/v1/kill-switch/active").json()["count"] == 0
    finally:
        guard.close()


def test_a_guard_offline_at_expiry_refuses_until_it_hears_of_the_revive(
    database_url: str,
    start_uvicorn: Callable[..., Uvicorn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTGUARD_EXPIRY_INTERVAL", "0.05")
    keys = keys_for(database_url, "org_x", operator=["operator"], agent=["agent"])
    server = start_uvicorn(database_url)
    guard = Guard(server.url, api_key=keys["agent"], max_staleness=120, agent_id="bot")

    @guard.guarded_action
    def send() -> str:
        return "sent"

    try:
        assert guard.wait_until_synced(10)
        with httpx.Client(base_url=server.url, headers=bearer(keys["operator"])) as client:
            body = {"target_type": "agent", "target_id": "bot", "duration": "2s"}
            killed = client.post("/api/v1/kill-switch/kill", json=body).json()
        eventually(lambda: guard.check("agent", "bot").is_killed, timeout=10)
        server.crash()  # the guard hears nothing from now on
        expires_at = datetime.fromisoformat(killed["expires_at"].replace("Z", "+00:00"))
        time.sleep(max(0.0, (expires_at - datetime.now(timezone.utc)).total_seconds()) + 1)
        # Past the expiry, the guard (offline, within max_staleness) still refuses, as the
        # kill: it never expires a kill on its own clock.
        with pytest.raises(PolicyViolationError) as refused:
            send()
        assert refused.value.target_id == "bot"
        assert not isinstance(refused.value, KillStateUnavailableError)
        # The server comes back on the same port, revives the expired kill, the guard resyncs.
        server.start()

        def allowed() -> bool:
            try:
                return send() == "sent"
            except PolicyViolationError:
                return False

        eventually(allowed, timeout=20, interval=0.1)
        revives = _audit(server.url, keys["operator"], "revive")
        assert [e["actor"] for e in revives] == ["expiry"]
    finally:
        guard.close()
