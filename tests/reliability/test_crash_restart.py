"""Crash and restart under load: agent processes run guarded calls while an operator kills and
revives them again and again; in the middle the server is SIGKILLed and restarted (SQLite), or
the PostgreSQL cluster is restarted under a running server.

Afterwards: no guarded call began after its kill's acknowledgement returned (until the next
revive); no kill or revive was lost or doubled (the audit log has each exactly once, and the
final state is the operator's); the interventions stored are exactly the refusals the agents saw.

``AGENTGUARD_RELIABILITY_TOGGLES`` sets the kill/revive cycles (30 by default, 100 for the
full run); see ``reliability_harness.py``.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import eventually
from support.api import bearer
from support.pg_cluster import PrivateCluster
from support.reliability import TOGGLES, Uvicorn, keys_for

AGENTS = 3
TARGET = {"target_type": "agent", "target_id": "bot"}
PAUSE = 0.03  # seconds in each state, so the agents' calls run into every kill and revive
AGENT_SCRIPT = Path(__file__).with_name("agent_process.py")
pytestmark = pytest.mark.slow


@dataclass
class Change:
    """One kill or revive as the operator saw it (CLOCK_MONOTONIC, ns)."""

    kind: str
    sent: int
    returned: int
    version: int | None  # None if the answer was lost and a retry found it committed
    kill_switch_id: str
    acknowledged: int | None = None  # kills: when every live instance was known to have it
    retried: bool = False


@dataclass
class Operator:
    """Kills and revives agent ``bot`` through the HTTP API, retrying through outages.

    A request whose answer is lost (connection error or 5xx) is sent again until the server
    answers; a 409 to a kill (404 to a revive) after such a loss means the lost one committed.
    """

    url: str
    key: str
    agents: int
    changes: list[Change] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, headers=bearer(self.key), timeout=30.0)

    def kill(self) -> Change:
        response, sent, lost = self._send("kill", {"wait": 15})
        returned = time.monotonic_ns()
        if response.status_code == 200:
            acked = response.headers["x-agentguard-acknowledged"]
            assert acked == f"{self.agents}/{self.agents}", f"kill acknowledged by {acked} only"
            change = Change("kill", sent, returned, _version(response), response.json()["id"])
            change.acknowledged = returned
        else:
            assert lost and response.status_code == 409, response.text
            record = response.json()["kill_switch"]
            change = Change("kill", sent, returned, None, record["id"], retried=True)
            change.acknowledged = self._wait_for_acks()
        self.changes.append(change)
        return change

    def revive(self) -> Change:
        response, sent, lost = self._send("revive", {})
        returned = time.monotonic_ns()
        if response.status_code == 200:
            change = Change("revive", sent, returned, _version(response), response.json()["id"])
        else:
            assert lost and response.status_code == 404, response.text
            change = Change("revive", sent, returned, None, self.changes[-1].kill_switch_id, True)
        self.changes.append(change)
        return change

    def _send(self, kind: str, params: dict[str, Any]) -> tuple[httpx.Response, int, bool]:
        lost = False
        sent = time.monotonic_ns()  # the first attempt: the change may commit from then on
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                response = self.client.post(f"/api/v1/kill-switch/{kind}", params=params,
                                            json=TARGET)  # fmt: skip
            except httpx.TransportError:
                lost = True
            else:
                if response.status_code < 500:
                    return response, sent, lost
                lost = True
            time.sleep(0.05)
        raise AssertionError(f"the server did not answer a {kind} within 45 s")

    def _wait_for_acks(self) -> int:
        def all_acknowledged() -> bool:
            response = self.client.get("/api/v1/kill-switch/acks", params=TARGET)
            body = response.json() if response.status_code == 200 else {}
            return body.get("live") == body.get("acknowledged") == self.agents

        eventually(all_acknowledged, 15, 0.02, message="not acknowledged by every agent")
        return time.monotonic_ns()

    def get_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        items: list[dict[str, Any]] = []
        while True:
            response = self._send_get(path, skip=len(items), limit=1000, **params)
            page = response.json()
            items.extend(page["data"])
            if len(items) >= page["count"] or not page["data"]:
                assert len(items) == page["count"]
                return items

    def _send_get(self, path: str, **params: Any) -> httpx.Response:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = self.client.get(path, params=params)
                if response.status_code == 200 or time.monotonic() > deadline:
                    assert response.status_code == 200, response.text
                    return response
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def _version(response: httpx.Response) -> int:
    return int(response.headers["x-agentguard-version"])


@dataclass
class Agent:
    popen: subprocess.Popen[str]
    instance_id: str
    out: Path


@pytest.fixture
def run_agents(tmp_path: Path) -> Iterator[Callable[..., list[Agent]]]:
    """Factory: ``run(url, key, checkpoint_every=0.0)`` starts AGENTS agent processes against a
    server; each has answered "ready"."""
    stop_file = tmp_path / "stop"
    started: list[Agent] = []

    def run(url: str, key: str, checkpoint_every: float = 0.0) -> list[Agent]:
        for i in range(AGENTS):
            instance = f"agent-{i}"
            out = tmp_path / f"{instance}.json"
            argv = [url, key, instance, str(out), str(stop_file), str(checkpoint_every)]
            popen = subprocess.Popen(
                [sys.executable, str(AGENT_SCRIPT), *argv],
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"{instance}.log").open("w"),
                text=True,
            )
            started.append(Agent(popen, instance, out))
        for agent in started:
            assert agent.popen.stdout is not None
            line = agent.popen.stdout.readline()
            assert line.strip() == "ready", (tmp_path / f"{agent.instance_id}.log").read_text()
        return started

    yield run
    stop_file.touch()
    for agent in started:
        try:
            agent.popen.wait(90)
        except subprocess.TimeoutExpired:
            agent.popen.kill()
            agent.popen.wait(5)


def stop_agents(agents: list[Agent], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Ask every agent to stop, flush its refusals and report; return the reports."""
    (tmp_path / "stop").touch()
    reports = {}
    for agent in agents:
        code = agent.popen.wait(90)
        log = (tmp_path / f"{agent.instance_id}.log").read_text()
        assert code == 0, log
        reports[agent.instance_id] = json.loads(agent.out.read_text())
    return reports


def registered(operator: Operator) -> bool:
    """Whether every agent's heartbeat has reached the server (so kill?wait waits for each)."""
    response = operator.client.get("/api/v1/agents/bot")
    if response.status_code != 200:
        return False
    live = [i for i in response.json()["instances"] if i["health"] == "active"]
    return len(live) == AGENTS


def exercise(
    server: Uvicorn, keys: dict[str, str], run_agents: Callable[..., list[Agent]],
    tmp_path: Path, fault: Callable[[], None], checkpoint_every: float = 0.0,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The whole scenario: agents, TOGGLES kill/revive cycles with ``fault`` in the middle,
    a last kill, then every check; returns the agents' reports."""
    agents = run_agents(server.url, keys["agent"], checkpoint_every)
    operator = Operator(server.url, keys["admin"], AGENTS)
    eventually(lambda: registered(operator), 20, 0.05, message="the agents never all reported")
    for i in range(TOGGLES):
        operator.kill()
        time.sleep(PAUSE)  # pacing, not a timing assertion: the agents keep calling meanwhile
        if i == TOGGLES // 2:
            fault()  # while killed: the kill must hold through it
        operator.revive()
        time.sleep(PAUSE)
    final = operator.kill()
    time.sleep(PAUSE)
    reports = stop_agents(agents, tmp_path)
    stopped = time.monotonic_ns()

    check_no_call_began_after_an_acknowledged_kill(operator.changes, reports, stopped)
    check_no_change_lost_or_doubled(operator, final)
    check_interventions_equal_refusals(operator, reports)
    return reports


def check_no_call_began_after_an_acknowledged_kill(
    changes: list[Change], reports: dict[str, dict[str, Any]], stopped: int
) -> None:
    kills = [c for c in changes if c.kind == "kill"]
    revives = [c for c in changes if c.kind == "revive"]
    windows = [
        (kill.acknowledged, revive.sent if revive else stopped, kill.kill_switch_id)
        for kill, revive in zip(kills, [*revives, None], strict=True)
    ]
    refused_in_windows = 0
    for instance, report in reports.items():
        assert report["flushed"], f"{instance} could not deliver its refusals"
        calls = report["calls"]
        starts = [started for started, _ in calls]
        refusal_at = {}  # call index -> refusal, in the order they happened
        refusals = iter(report["refusals"])
        for index, (_, ok) in enumerate(calls):
            if not ok:
                refusal_at[index] = next(refusals)
        for begin, end, kill_switch_id in windows:
            assert begin is not None
            first, last = bisect.bisect_left(starts, begin), bisect.bisect_left(starts, end)
            allowed = [starts[k] for k in range(first, last) if calls[k][1]]
            assert not allowed, (
                f"{instance}: {len(allowed)} calls allowed after kill {kill_switch_id} was "
                f"acknowledged, the first {(allowed[0] - begin) / 1e6:.1f} ms after"
            )
            for k in range(first, last):  # refused by this very kill, not a stale view
                assert refusal_at[k][1:] == [kill_switch_id, True], refusal_at[k]
            refused_in_windows += last - first
        assert report["refused"] == len(report["refusals"])
        assert report["executed"] == sum(ok for _, ok in calls)
        assert report["executed"] > 0
    # The agents really were calling during the kills: the check above is not vacuous.
    assert refused_in_windows >= len(windows), refused_in_windows


def check_no_change_lost_or_doubled(operator: Operator, final: Change) -> None:
    audit = operator.get_all("/api/v1/audit", target_type="agent", target_id="bot")
    entries = sorted(audit, key=lambda e: e["version"])
    assert [e["action"] for e in entries] == [c.kind for c in operator.changes]
    versions = [e["version"] for e in entries]
    assert versions == sorted(set(versions)), "each change has its own, growing version"
    for change, entry in zip(operator.changes, entries, strict=True):
        if change.version is not None:
            assert entry["version"] == change.version
    kill_ids = [c.kill_switch_id for c in operator.changes if c.kind == "kill"]
    assert len(set(kill_ids)) == len(kill_ids)
    active = operator.get_all("/api/v1/kill-switch/active")
    assert [ks["id"] for ks in active] == [final.kill_switch_id]
    check = operator.client.get("/api/v1/kill-switch/check", params=TARGET).json()
    assert check["is_killed"] is True


def check_interventions_equal_refusals(
    operator: Operator, reports: dict[str, dict[str, Any]]
) -> None:
    seen = {
        iv_id: instance
        for instance, report in reports.items()
        for iv_id, _, _ in report["refusals"]
    }
    assert len(seen) == sum(len(r["refusals"]) for r in reports.values())
    stored = operator.get_all("/api/v1/interventions", target_id="bot")
    stored_ids = [iv["id"] for iv in stored]
    assert len(stored_ids) == len(set(stored_ids)), "an intervention was stored twice"
    missing = set(seen) - set(stored_ids)
    extra = set(stored_ids) - set(seen)
    assert not missing and not extra, f"{len(missing)} refusals lost, {len(extra)} invented"
    assert all(iv["instance_id"] == seen[iv["id"]] for iv in stored)
    assert all(iv["type"] == "HARD_BLOCK" for iv in stored)


def test_server_sigkilled_and_restarted_under_load(
    start_uvicorn: Callable[..., Uvicorn], run_agents: Callable[..., list[Agent]], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url)

    def crash_and_restart() -> None:
        server.crash()
        server.start()  # same port, same database

    exercise(server, keys, run_agents, tmp_path, crash_and_restart)
    for i in range(AGENTS):  # the crash was felt: every agent lost its stream and reconnected
        assert "kill-state stream from" in (tmp_path / f"agent-{i}.log").read_text()


@pytest.mark.postgres
def test_postgres_restarted_under_load(
    private_postgres: PrivateCluster,
    start_uvicorn: Callable[..., Uvicorn],
    run_agents: Callable[..., list[Agent]],
    tmp_path: Path,
) -> None:
    url = private_postgres.create_database()
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url)

    exercise(server, keys, run_agents, tmp_path, private_postgres.restart)
    assert "lost the PostgreSQL change listener" in server.output()  # the restart was felt


@pytest.mark.postgres
def test_postgres_stopped_for_10_s_under_load(
    private_postgres: PrivateCluster,
    start_uvicorn: Callable[..., Uvicorn],
    run_agents: Callable[..., list[Agent]],
    tmp_path: Path,
) -> None:
    """The database away for 10 s while agents call, refuse, heartbeat and checkpoint: no
    agent crashes, no refusal is lost, the kill holds, and the server says so once."""
    url = private_postgres.create_database()
    keys = keys_for(url, "org_a", admin=["admin"], agent=["agent"])
    server = start_uvicorn(url)
    during: list[httpx.Response] = []

    def outage() -> None:
        private_postgres.stop()
        try:
            ends = time.monotonic() + 10
            while time.monotonic() < ends:  # the agents keep calling (refused: killed)
                during.append(
                    httpx.get(f"{server.url}/api/v1/interventions", headers=bearer(keys["admin"]))
                )
                time.sleep(0.5)
        finally:
            private_postgres.start()

    reports = exercise(server, keys, run_agents, tmp_path, outage, checkpoint_every=0.2)

    assert during and all(r.status_code == 503 for r in during), [r.status_code for r in during]
    assert {r.json()["error"] for r in during} == {"database_unavailable"}
    assert all(r.headers["retry-after"].isdigit() for r in during)
    with httpx.Client(base_url=server.url, headers=bearer(keys["agent"])) as client:
        for instance, report in reports.items():  # every agent checkpointed through it all
            # One every 0.2 s when quiet; a loaded machine gets fewer, the outage or not.
            assert report["checkpoints"] > 5, report["checkpoints"]
            state = client.get(f"/api/v1/checkpoints/{instance}").json()["state"]
            assert state == {"calls": len(report["calls"])}
    output = server.output()
    assert output.count("the database is unavailable") == 1, output
    assert "Traceback" not in output, output
