"""Kills that end with their run: ``until: run_end``, a clean exit, ``POST /runs/{id}/finish``
and ``guard.finish_run()``; SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from agentguard import Guard, InvalidInputError, scope
from agentguard.server import KillSwitchServer

HEARTBEATS = "/api/v1/heartbeats"


def beat(instance_id: str, run_id: str, agent_id: str = "bot", **fields: Any) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "agent_id": agent_id,
        "run_id": run_id,
        "interval": 10,
        "executed": 0,
        "refused": 0,
        "failed": 0,
        "cost_usd": 0,
        "version": 0,
        **fields,
    }


def killed(ops: Any, run_id: str) -> bool:
    return bool(ops.check("run", run_id).json()["is_killed"])


def test_a_run_kill_ends_when_the_runs_instances_exit_cleanly(
    server: KillSwitchServer, api: Any
) -> None:
    ops, agent = api(server), api(server, scopes=("agent",), owner="bot")
    for instance in ("i-1", "i-2"):
        assert agent.client.post(HEARTBEATS, json=beat(instance, "run-7")).status_code == 200
    kill = ops.kill("run", "run-7", reason="looping", until="run_end")
    assert kill.status_code == 200, kill.text
    assert ops.kill("run", "run-8", reason="stays").status_code == 200  # no until
    agent.client.post(HEARTBEATS, json=beat("i-8", "run-8", status="exited"))
    # One instance exits; the other still runs: the kill holds.
    agent.client.post(HEARTBEATS, json=beat("i-1", "run-7", status="exited"))
    assert killed(ops, "run-7")
    # The last one exits: the run is over and its kill ends; run-8's (no until) stays.
    agent.client.post(HEARTBEATS, json=beat("i-2", "run-7", status="exited"))
    assert not killed(ops, "run-7") and killed(ops, "run-8")
    audit = ops.get("/api/v1/audit", action="revive").json()["data"]
    (entry,) = [e for e in audit if e["target_id"] == "run-7"]
    assert entry["actor"] == "agentguard:run-ended"
    assert "its instances exited" in entry["detail"] and "'i-2'" in entry["detail"]


def test_finishing_a_run_ends_only_a_kill_made_until_then(
    server: KillSwitchServer, api: Any
) -> None:
    ops, agent = api(server), api(server, scopes=("agent",), owner="bot")
    ops.kill("run", "run-1", until="run_end")
    ops.kill("run", "run-2")
    finished = agent.client.post("/api/v1/runs/run-1/finish")
    assert finished.status_code == 200, finished.text
    body = finished.json()
    assert body["run_id"] == "run-1" and body["ended"]["revived_by"] == agent.actor
    assert finished.headers["x-agentguard-version"] == "3"
    again = agent.client.post("/api/v1/runs/run-1/finish")
    assert again.status_code == 200 and again.json() == {"run_id": "run-1", "ended": None}
    assert agent.client.post("/api/v1/runs/run-2/finish").json()["ended"] is None
    assert killed(ops, "run-2") and not killed(ops, "run-1")
    (entry,) = ops.get("/api/v1/audit", action="revive").json()["data"]
    assert entry["detail"] == "ended with run 'run-1': finished"


def test_until_is_for_run_kills_only(server: KillSwitchServer, api: Any) -> None:
    ops = api(server)
    wrong = ops.kill("agent", "bot", until="run_end")
    assert wrong.status_code == 422 and wrong.json()["field"] == "until"
    assert ops.kill("run", "r", until="forever").json()["field"] == "until"
    assert not ops.check("agent", "bot").json()["is_killed"]
    # Without until: the seed's answer, unchanged.
    plain = ops.kill("run", "r")
    assert plain.status_code == 200 and "until" not in plain.json()


def test_a_bound_key_finishes_only_its_agents_runs(server: KillSwitchServer, api: Any) -> None:
    ops = api(server)
    mailer = api(server, scopes=("agent",), owner="m", agents=["mailer"])
    other = api(server, scopes=("agent",), owner="o", agents=["other"])
    other.client.post(HEARTBEATS, json=beat("o-1", "run-o", agent_id="other"))
    mailer.client.post(HEARTBEATS, json=beat("m-1", "run-m", agent_id="mailer"))
    ops.kill("run", "run-o", until="run_end")
    ops.kill("run", "unknown", until="run_end")
    for run in ("run-o", "unknown"):
        refused = mailer.client.post(f"/api/v1/runs/{run}/finish")
        assert refused.status_code == 403 and refused.json()["field"] == "run_id", run
        assert killed(ops, run)
    assert mailer.client.post("/api/v1/runs/run-m/finish").json()["ended"] is None
    assert other.client.post("/api/v1/runs/run-o/finish").json()["ended"] is not None


def test_guard_finish_run_in_process(server: KillSwitchServer, api: Any) -> None:
    ops = api(server)
    guard = Guard(server, organization_id="org_a")
    try:
        ops.kill("run", "run-9", until="run_end")
        with scope(run_id="run-9"):
            ended = guard.finish_run()
        assert ended is not None and ended.target_id == "run-9" and not ended.is_active
        assert guard.finish_run("run-9") is None
        try:
            guard.finish_run()
        except InvalidInputError as exc:
            assert exc.field == "run_id"
        else:
            raise AssertionError("finish_run without a run")
    finally:
        guard.close()
