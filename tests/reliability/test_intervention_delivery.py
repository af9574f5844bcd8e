"""Refusals reach the server in batches, and a server outage is retried with backoff.

A killed agent refuses every call; under load that is hundreds of refusals a second. They must
go out in batches about once a second (not one request per refusal, just when the server is
busiest), retries during an outage must back off (not hammer the server and flood the log), and
after the outage they must arrive on their own, without waiting for a flush.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from agentguard import Guard, PolicyViolationError, scope
from support import eventually
from support.api import bearer
from support.reliability import Uvicorn, keys_for

INTERVENTIONS = "POST /api/v1/interventions"


def refuse_for(guard: Guard, seconds: float) -> int:
    """Call a killed agent's tool about once a millisecond; return how many were refused."""
    refused = 0
    deadline = time.monotonic() + seconds
    with scope(agent_id="bot"):
        while time.monotonic() < deadline:
            try:
                guard.enforce("send_email")
            except PolicyViolationError:
                refused += 1
            time.sleep(0.001)
    return refused


def stored(server: Uvicorn, key: str) -> int:
    response = httpx.get(
        f"{server.url}/api/v1/interventions", params={"limit": 1}, headers=bearer(key)
    )
    return int(response.json()["count"])


@pytest.mark.slow
def test_refusals_are_batched_and_an_outage_backs_off(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url, log_level="info")  # its access log counts the requests
    kill = {"target_type": "agent", "target_id": "bot"}
    httpx.post(f"{server.url}/api/v1/kill-switch/kill", json=kill, headers=bearer(keys["admin"]))
    guard = Guard(server.url, api_key=keys["agent"], max_staleness=60)
    try:
        assert guard.wait_until_synced(5)

        # Under load: batches about once a second.
        refused = refuse_for(guard, 2.5)
        assert guard.flush(10)
        posts = server.output().count(INTERVENTIONS)
        assert stored(server, keys["admin"]) == refused > 500
        assert posts <= 6, f"{refused} refusals took {posts} requests"

        # An outage: retries back off instead of following every new refusal.
        server.crash()
        with caplog.at_level(logging.DEBUG, logger="agentguard"):
            refused_meanwhile = refuse_for(guard, 2.5)
        attempts = [r for r in caplog.records if "could not deliver" in r.getMessage()]
        assert 1 <= len(attempts) <= 5, f"{len(attempts)} delivery attempts in 2.5 s"
        # One warning for the outage, not one per attempt (the others are at debug level).
        assert [r.levelno for r in attempts].count(logging.WARNING) == 1

        # Back again, and revived: no more refusals to wake the recorder, no flush; the
        # refusals made during the outage still arrive within the (short) backoff.
        server.start()
        httpx.post(
            f"{server.url}/api/v1/kill-switch/revive", json=kill, headers=bearer(keys["admin"])
        )
        eventually(lambda: refuse_for(guard, 0.01) == 0, 15)
        total = guard.counts("agent", "bot").refused
        assert total >= refused + refused_meanwhile
        eventually(lambda: stored(server, keys["admin"]) == total, 10)
    finally:
        guard.close()


def test_an_intervention_the_server_refuses_is_dropped_and_the_rest_still_arrive(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An id a framework gave (integrations pass theirs through ``enforce``) that the server
    refuses as an id (422 naming ``interventions.K.agent_id``) costs that one record, not the
    whole buffer: it is never retried, and the refusals around it are stored."""
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url)
    kill = {"target_type": "tool", "target_id": "send_email"}
    httpx.post(f"{server.url}/api/v1/kill-switch/kill", json=kill, headers=bearer(keys["admin"]))
    guard = Guard(server.url, api_key=keys["agent"], max_staleness=60)
    try:
        assert guard.wait_until_synced(5)
        with caplog.at_level(logging.ERROR, logger="agentguard"):
            for agent_id in ("bot-1", "GPT\u0447at", "bot-2"):  # a Latin-Cyrillic word
                with pytest.raises(PolicyViolationError):
                    guard.enforce("send_email", agent_id=agent_id)
            assert guard.flush(15)
        listed = httpx.get(
            f"{server.url}/api/v1/interventions", headers=bearer(keys["admin"])
        ).json()
        assert sorted(iv["agent_id"] for iv in listed["data"]) == ["bot-1", "bot-2"]
        (refused,) = [r for r in caplog.records if "the server refused" in r.getMessage()]
        assert "agent_id" in refused.getMessage() and "\n" not in refused.getMessage()
    finally:
        guard.close()
