"""``agentguard agents`` and ``kill --wait`` with live instances: remote guards in subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

from support import eventually
from support.cli import Server, clean_env, start_server
from support.processes import stop

AGENT = "email-campaign"

# A live instance: a remote guard (streaming kill state, acknowledging each change) with
# heartbeats, running until its stdin closes.
INSTANCE = """
import sys
from agentguard import Guard

url, key, agent, instance = sys.argv[1:5]
guard = Guard(url, api_key=key, agent_id=agent, instance_id=instance)
if not guard.wait_until_synced(15):
    sys.exit("no kill state from " + url)
guard.start_heartbeat(interval=1.0)
print("ready", flush=True)
sys.stdin.read()
guard.close()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("fleet-server"))
    yield s
    stop(s.popen)


@pytest.fixture
def start_instances(server: Server) -> Iterator[Callable[..., list[str]]]:
    """Factory: ``start_instances(agent_key, "inst-1", ...)``; each ready when returned."""
    running: list[subprocess.Popen[str]] = []

    def start(agent_key: str, *instance_ids: str, agent: str = AGENT) -> list[str]:
        popens = [
            subprocess.Popen(
                [sys.executable, "-c", INSTANCE, server.url, agent_key, agent, instance_id],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=clean_env(),
            )
            for instance_id in instance_ids
        ]
        running.extend(popens)
        for popen in popens:
            assert popen.stdout is not None
            assert popen.stdout.readline().strip() == "ready"
        return list(instance_ids)

    yield start
    for popen in running:
        if popen.stdin is not None:
            popen.stdin.close()
    for popen in running:
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            stop(popen)


def wait_for_instances(server: Server, key: str, agent: str, count: int) -> dict[str, object]:
    """Poll ``agentguard agents AGENT --json`` until it lists ``count`` instances."""

    def listed() -> dict[str, object] | None:
        result = server.cli(key, "agents", agent, "--json")
        assert result.code == 0, result
        body: dict[str, object] = result.json()
        return body if len(body["instances"]) >= count else None  # type: ignore[arg-type]

    return eventually(listed, 15, 0.2, message=f"{count} instances never reported")


def test_agents_and_kill_wait_until_every_live_instance_acknowledged(
    server: Server, start_instances: Callable[..., list[str]]
) -> None:
    org = "org_fleet"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    assert server.cli(operator, "agents").stdout.strip() == "no agents have reported yet"
    assert server.cli(operator, "agents", "--json").json() == {"data": [], "count": 0}
    nobody = server.cli(operator, "kill", "mission", "m-1", "--wait")
    assert nobody.code == 0, nobody
    assert "acknowledged by 0/0 instances: no live instance runs under this target" in nobody.stdout
    as_json = server.cli(operator, "kill", "run", "r-1", "--wait", "--timeout", "0.2", "--json")
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout)["acks"]["live"] == 0
    server.cli(operator, "revive", "mission", "m-1")
    server.cli(operator, "revive", "run", "r-1")

    start_instances(agent_key, "inst-1", "inst-2")
    agent = wait_for_instances(server, operator, AGENT, 2)
    assert agent["agent_id"] == AGENT and agent["health"] == "active"

    table = server.cli(operator, "agents")
    assert table.code == 0, table
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["AGENT", "HEALTH", "INSTANCES"]
    assert row.split()[:3] == [AGENT, "active", "2"]
    assert row.split()[-2:] == ["-", "$0.00"]  # no drill yet
    # A drill: both instances rehearse the kill and answer; the agent shows it armed.
    drilled = server.cli(operator, "drill", "agent", AGENT)
    assert drilled.code == 0, drilled
    assert re.fullmatch(
        r"armed: 2/2 instances acknowledged the drill within \d+ ms", drilled.stdout.strip()
    ), drilled.stdout
    listed = server.cli(operator, "agents").stdout.splitlines()[1]
    assert re.search(r"  armed (just now|\d+ s ago)  ", listed), listed
    nobody = server.cli(operator, "drill", "agent", "ghost", "--timeout", "0.5")
    assert nobody.code == 1
    assert "not armed: agent 'ghost' has no live instance to drill" in nobody.stderr
    detail = server.cli(operator, "agents", AGENT)
    assert "drill      armed: 2/2 instances acknowledged the drill within " in detail.stdout
    assert detail.code == 0, detail
    assert f"agent      {AGENT}" in detail.stdout and "health     active" in detail.stdout
    assert "INSTANCE" in detail.stdout and "inst-1" in detail.stdout and "inst-2" in detail.stdout
    ghost = server.cli(operator, "agents", "ghost")
    assert ghost.code == 3 and "no heartbeats from agent 'ghost'" in ghost.stderr

    killed = server.cli(
        operator, "kill", "agent", AGENT, "--reason", "broken link", "--wait", "--timeout", "20"
    )
    assert killed.code == 0, killed
    first, done = killed.stdout.strip().splitlines()
    assert first == f"killed agent '{AGENT}' (version 5): broken link"
    # README's words: "acknowledged by 49/50 instances, slowest 41 ms"
    assert re.fullmatch(
        rf"acknowledged by 2/2 instances, slowest \d+ ms \(inst-\d \(agent {AGENT}\)\)", done
    ), done
    assert killed.stderr.strip().splitlines()[-1].startswith("acknowledged by 2/2 instances (")

    after = server.cli(operator, "agents", AGENT)
    assert "health     killed" in after.stdout and "broken link" in after.stdout
    assert server.cli(operator, "agents").stdout.splitlines()[1].split()[1] == "KILLED"

    as_json = server.cli(operator, "kill", "tool", "send_email", "--wait", "--json")
    assert as_json.code == 0, as_json
    body = as_json.json()
    assert body["complete"] is True and body["version"] == 6
    assert body["kill_switch"]["target_id"] == "send_email"
    acks = body["acks"]
    assert acks["target_type"] == "tool" and acks["acknowledged"] == acks["live"]
    assert isinstance(body["waited_s"], float)


def test_kill_wait_names_the_instances_that_did_not_acknowledge(
    server: Server, start_instances: Callable[..., list[str]]
) -> None:
    org = "org_silent"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    start_instances(agent_key, "inst-a")
    # A live instance that never applies anything: heartbeats at version 0, no stream.
    beat = {
        "instance_id": "inst-silent",
        "agent_id": AGENT,
        "interval": 60,
        "executed": 0,
        "refused": 0,
        "failed": 0,
        "cost_usd": 0,
        "version": 0,
    }
    answer = httpx.post(
        f"{server.url}/api/v1/heartbeats",
        json=beat,
        headers={"Authorization": f"Bearer {agent_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    wait_for_instances(server, operator, AGENT, 2)

    result = server.cli(operator, "kill", "agent", AGENT, "--wait", "--timeout", "1.5")
    assert result.code == 1, result
    assert result.stdout.startswith(f"killed agent '{AGENT}' (version 1)")
    assert (
        f"Error: acknowledged by 1/2 instances within 1.5 s; waiting on "
        f"inst-silent (agent {AGENT}) (the kill itself is in force)"
    ) in result.stderr
    status = server.cli(operator, "check", "agent", AGENT, "--json").json()
    assert status["is_killed"] is True
    reader = server.key("read", org=org)
    denied = server.cli(reader, "kill", "mission", "m-2", "--wait")
    assert denied.code == 1 and "'operator' scope" in denied.stderr
