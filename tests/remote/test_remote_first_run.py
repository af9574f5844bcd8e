"""A remote guard's first run, as README tells it, against a real server process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentguard import (
    Guard,
    KillStateUnavailableError,
    PolicyViolationError,
    scope,
)
from support import eventually
from support.api import bearer
from support.live import Live
from support.processes import free_port
from support.tcpproxy import TcpProxy

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def proxy(live: Live) -> Iterator[TcpProxy]:
    p = TcpProxy(live.process.port)
    yield p
    p.close()


@SQLITE_ONLY
@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_the_first_call_after_construction_is_allowed(
    live: Live, proxy: TcpProxy, mode: str
) -> None:
    proxy.delay = 0.3  # a server a little slow to answer: the first sync takes a while
    guard = Guard(proxy.url, api_key=live.agent, agent_id="sync-bot", mode=mode)
    try:
        assert guard.enforce("probe")  # no "kill state has never been synced"
        assert guard.counts().model_dump() == {
            "executed": 1,
            "refused": 0,
            "failed": 0,
            "unavailable": 0,
            "cancelled": 0,
        }
    finally:
        guard.close()


def test_start_wait_waits_for_the_first_sync_then_fails_closed() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    guard = Guard(nowhere, api_key="ag_x_y", agent_id="bot", start_wait=0.5)
    assert time.monotonic() - started >= 0.5
    try:
        with pytest.raises(KillStateUnavailableError, match="never been synced") as caught:
            guard.enforce("probe")
        assert isinstance(caught.value, PolicyViolationError)  # existing handlers still stop
        assert caught.value.killed is False and caught.value.kill_switch_id is None
        counts = guard.counts()
        assert (counts.refused, counts.unavailable) == (0, 1)
    finally:
        guard.close()


@SQLITE_ONLY
def test_unavailable_refusals_reach_the_server_as_their_own_type(
    live: Live, proxy: TcpProxy
) -> None:
    proxy.refusing = True  # the server is out of reach when the agent starts
    guard = Guard(proxy.url, api_key=live.agent, agent_id="bot", start_wait=0)
    try:
        with pytest.raises(KillStateUnavailableError) as caught:
            guard.enforce("send_email")
        proxy.refusing = False
        assert guard.wait_until_synced(15)
        assert guard.flush(15)
        assert live.kill("bot").status_code == 200
        eventually(lambda: _refused(guard), 10)
        assert guard.flush(15)
    finally:
        guard.close()

    def listed(**params: Any) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{live.url}/api/v1/interventions", params=params, headers=bearer(live.admin)
        )
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    (unavailable,) = listed(type="UNAVAILABLE")
    assert unavailable["id"] == caught.value.intervention_id
    assert (unavailable["target_type"], unavailable["target_id"]) == ("agent", "bot")
    assert unavailable["kill_switch_id"] is None and "never been synced" in unavailable["reason"]
    (block,) = listed(type="HARD_BLOCK")
    assert block["kill_switch_id"] and block["id"] != unavailable["id"]
    counts = httpx.get(
        f"{live.url}/api/v1/interventions/counts", headers=bearer(live.admin)
    ).json()["data"]
    assert {(c["type"], c["count"]) for c in counts} == {("UNAVAILABLE", 1), ("HARD_BLOCK", 1)}

    cli = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "interventions", "--type", "UNAVAILABLE"],
        env=_cli_env(live),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "UNAVAILABLE" in cli.stdout and "HARD_BLOCK" not in cli.stdout


def _refused(guard: Guard) -> bool:
    with scope(agent_id="bot"):
        try:
            guard.enforce("send_email")
        except PolicyViolationError as error:
            return not isinstance(error, KillStateUnavailableError)
    return False


@SQLITE_ONLY
def test_heartbeats_started_in_a_scope_carry_its_agent(live: Live) -> None:
    guard = Guard(live.url, api_key=live.agent)
    try:
        with scope(agent_id="scoped-bot"):
            heartbeat = guard.start_heartbeat(interval=60)
        assert heartbeat.scope.agent_id == "scoped-bot"
        eventually(lambda: heartbeat.sent >= 1, 10)
    finally:
        guard.close()
    agents = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "agents", "scoped-bot"],
        env=_cli_env(live),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agents.returncode == 0, agents.stderr
    assert guard.instance_id in agents.stdout and "no heartbeats" not in agents.stdout


def _cli_env(live: Live) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    return {**env, "AGENTGUARD_URL": live.url, "AGENTGUARD_API_KEY": live.admin}
