"""Drills against real processes: two ``agentguard serve`` replicas on one database (SQLite and
PostgreSQL), three agent processes streaming from them and running guarded calls throughout,
and a webhook receiver on loopback.

- A drill through one replica reaches the instances streaming from the other too: 3/3, and
  no call of any process is refused (their calls run during the drill).
- With one agent process frozen (SIGSTOP) the drill reports 2/3, names it, and fires
  ``drill.failed`` (signed, verified) to the webhook.
- ``--drill-every`` on both replicas drills each interval once across them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as Verifier

from support import eventually
from support.api import bearer
from support.receiver import Receiver
from support.reliability import Serve, keys_for

AGENT_SCRIPT = Path(__file__).with_name("agent_process.py")
OPTIONS = ("--webhooks-allow-private", "--webhook-timeout", "2")
INSTANCES = ("vm-11", "vm-12", "vm-13")


@dataclass
class AgentProcess:
    popen: subprocess.Popen[str]
    instance_id: str
    out: Path
    log: Path

    def report(self) -> dict[str, Any]:
        code = self.popen.wait(60)
        assert code == 0, self.log.read_text()
        return dict(json.loads(self.out.read_text()))


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[list[str], str], list[AgentProcess]]]:
    """Factory: ``agents(urls, key)`` runs one agent process of agent ``bot`` per URL (an
    instance of INSTANCES each), every one running guarded calls until the test ends."""
    stop_file = tmp_path / "stop"
    started: list[AgentProcess] = []

    def run(urls: list[str], key: str) -> list[AgentProcess]:
        for url, instance in zip(urls, INSTANCES, strict=False):
            out, log = tmp_path / f"{instance}.json", tmp_path / f"{instance}.log"
            popen = subprocess.Popen(
                [sys.executable, str(AGENT_SCRIPT), url, key, instance, str(out), str(stop_file)],
                stdout=subprocess.PIPE,
                stderr=log.open("w"),
                text=True,
            )
            started.append(AgentProcess(popen, instance, out, log))
        for agent in started:
            assert agent.popen.stdout is not None
            assert agent.popen.stdout.readline().strip() == "ready", agent.log.read_text()
        return started

    yield run
    stop_file.touch()
    for agent in started:
        try:
            os.kill(agent.popen.pid, signal.SIGCONT)
            agent.popen.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            agent.popen.kill()
            agent.popen.wait(5)


def api(server: Serve, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(key), timeout=70)


def live_instances(client: httpx.Client) -> set[str]:
    answer = client.get("/agents/bot")
    if answer.status_code != 200:
        return set()
    return {i["instance_id"] for i in answer.json()["instances"] if i["health"] == "active"}


def test_a_drill_reaches_every_process_through_both_replicas_and_refuses_nothing(
    database_url: str, tmp_path: Path, agents: Callable[[list[str], str], list[AgentProcess]]
) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"], operator=["operator"], agent=["agent"])
    replicas = [Serve(database_url, tmp_path, *OPTIONS) for _ in range(2)]
    try:
        # Two instances stream from replica 0, one from replica 1; the drill goes to replica 1.
        processes = agents([replicas[0].url, replicas[1].url, replicas[0].url], keys["agent"])
        operator = api(replicas[1], keys["operator"])
        eventually(lambda: live_instances(operator) == set(INSTANCES), 30, 0.2)
        started = time.monotonic_ns()
        answer = operator.post("/drills", json={"target_type": "agent", "target_id": "bot"})
        ended = time.monotonic_ns()
        assert answer.status_code == 200, answer.text
        drill = answer.json()
        assert drill["status"] == "armed", drill
        assert (drill["live"], drill["acknowledged"], drill["not_answering"]) == (3, 3, [])
        assert drill["slowest_ms"] is not None and drill["slowest_ms"] < 5000

        # The CLI says the same, in its sentence.
        cli = subprocess.run(
            [sys.executable, "-m", "agentguard.cli", "drill", "agent", "bot",
             "--url", replicas[0].url, "--api-key", keys["operator"]],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.startswith("armed: 3/3 instances acknowledged the drill within "), (
            cli.stdout
        )

        # The agent's last drill, in the agents API, and the audit log of both drills.
        last = operator.get("/agents/bot").json()["last_drill"]
        assert last["status"] == "armed" and last["live"] == 3
        actions = [e["action"] for e in operator.get("/audit").json()["data"]]
        assert actions.count("drill") == 2 and actions.count("drill.armed") == 2, actions

        (tmp_path / "stop").touch()
        for process in processes:
            report = process.report()
            assert report["refused"] == 0 and report["refusals"] == []
            during = [ok for at, ok in report["calls"] if started <= at <= ended]
            assert during and all(during), (process.instance_id, len(during))
    finally:
        for replica in replicas:
            replica.stop()


def test_a_frozen_process_fails_the_drill_and_fires_drill_failed(
    database_url: str, tmp_path: Path, agents: Callable[[list[str], str], list[AgentProcess]]
) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"], agent=["agent"])
    replicas = [Serve(database_url, tmp_path, *OPTIONS) for _ in range(2)]
    try:
        with Receiver() as receiver:
            admin = api(replicas[0], keys["admin"])
            hook = admin.post(
                "/webhooks", json={"url": receiver.url(), "events": ["drill.failed"]}
            ).json()
            processes = agents([replicas[0].url, replicas[1].url, replicas[1].url], keys["agent"])
            eventually(lambda: live_instances(admin) == set(INSTANCES), 30, 0.2)
            frozen = processes[2]
            os.kill(frozen.popen.pid, signal.SIGSTOP)
            try:
                drill = admin.post(
                    "/drills", json={"target_type": "agent", "target_id": "bot", "timeout": 2}
                ).json()
            finally:
                os.kill(frozen.popen.pid, signal.SIGCONT)
            assert drill["status"] == "failed", drill
            assert (drill["live"], drill["acknowledged"]) == (3, 2)
            assert drill["not_answering"] == [frozen.instance_id]

            [delivery] = receiver.wait_for(1, timeout=30)
            event = Verifier(hook["secret"]).verify(delivery.body, delivery.headers)
            assert event["type"] == "drill.failed"
            data = event["data"]
            assert (data["target_id"], data["live"], data["acknowledged"]) == ("bot", 3, 2)
            assert data["not_answering"] == [frozen.instance_id]
            assert data["drill"]["id"] == drill["id"]

            last = admin.get("/agents/bot").json()["last_drill"]
            assert last["id"] == drill["id"] and last["status"] == "failed"
            audit = admin.get("/audit").json()["data"]
            [failed] = [e for e in audit if e["action"] == "drill.failed"]
            assert frozen.instance_id in failed["detail"]

            (tmp_path / "stop").touch()
            for process in processes:
                assert process.report()["refused"] == 0
    finally:
        for replica in replicas:
            replica.stop()


def test_scheduled_drills_run_once_per_interval_across_replicas(
    database_url: str, tmp_path: Path, agents: Callable[[list[str], str], list[AgentProcess]]
) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"], agent=["agent"])
    schedule = ("--drill-every", "2s", "--drill-timeout", "1")
    replicas = [Serve(database_url, tmp_path, *OPTIONS, *schedule) for _ in range(2)]
    try:
        admin = api(replicas[0], keys["admin"])
        agents([replicas[0].url, replicas[1].url], keys["agent"])

        def scheduled() -> list[dict[str, Any]]:
            page = admin.get("/drills", params={"target_type": "agent", "target_id": "bot"})
            return [d for d in page.json()["data"] if d["scheduled"] and d["status"] != "running"]

        drills = eventually(lambda: len(scheduled()) >= 3 and scheduled(), 30, 0.5)
        slots = [int(datetime.fromisoformat(d["started_at"]).timestamp() // 2) for d in drills]
        assert len(slots) == len(set(slots)), slots  # never two drills of one interval
        assert all(d["started_by"] == "agentguard (scheduled drill)" for d in drills)
        armed = [d for d in drills if d["live"] == 2]
        assert armed and all(d["status"] == "armed" for d in armed), drills
    finally:
        for replica in replicas:
            replica.stop()
