"""The fleet: heartbeats, health, acknowledgements, ``?wait=``, cost, server rules, checkpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.testclient import TestClient

from agentguard import (
    BudgetRule,
    ErrorRateRule,
    Guard,
    InvalidInputError,
    LoopRule,
    PolicyViolationError,
    RateRule,
)
from agentguard.records import utcnow
from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer

AGENTS = "/api/v1/agents"
ACKS = "/api/v1/kill-switch/acks"


class Clock:
    """The fleet's wall clock, moved forward by hand."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> Any:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def beat(instance_id: str, agent_id: str | None = "bot", **fields: Any) -> dict[str, Any]:
    """A heartbeat body."""
    body: dict[str, Any] = {
        "instance_id": instance_id,
        "interval": 10,
        "executed": 0,
        "refused": 0,
        "failed": 0,
        "cost_usd": 0,
        "version": 0,
        **fields,
    }
    if agent_id is not None:
        body["agent_id"] = agent_id
    return body


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet(make_server: Any, database_url: str, clock: Clock) -> KillSwitchServer:
    server: KillSwitchServer = make_server(database_url, clock=clock)
    server.start()
    return server


def send(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/heartbeats", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def agent_of(client: TestClient, agent_id: str = "bot") -> dict[str, Any]:
    response = client.get(f"{AGENTS}/{agent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def health(client: TestClient, agent_id: str = "bot") -> tuple[str, list[str]]:
    agent = agent_of(client, agent_id)
    return agent["health"], [i["health"] for i in agent["instances"]]


# -- agents, totals and cost ---------------------------------------------------------------------


def test_agents_list_instances_totals_and_cost(fleet: KillSwitchServer, api: Any) -> None:
    ops = api(fleet)
    c = ops.client
    send(c, beat("bot-1", run_id="r1", executed=10, refused=1, failed=2, cost_usd=1.25))
    send(c, beat("bot-2", run_id="r2", executed=5, cost_usd=0.5))
    send(c, beat("bot-1", run_id="r1", executed=30, refused=3, failed=2, cost_usd=2.0))
    send(c, beat("other-1", agent_id="other", executed=7))
    send(c, beat("anonymous-1", agent_id=None, executed=99))  # no agent: not listed
    listed = c.get(AGENTS).json()
    assert listed["count"] == 2
    assert [a["agent_id"] for a in listed["data"]] == ["bot", "other"]
    bot = listed["data"][0]
    assert bot == agent_of(c)
    assert (bot["executed"], bot["refused"], bot["failed"]) == (35, 3, 2)
    assert bot["cost_usd"] == pytest.approx(2.5)
    assert bot["cost_usd_today"] == pytest.approx(2.5)  # every heartbeat arrived today
    assert bot["health"] == "active" and bot["kill_switch"] is None
    instances = {i["instance_id"]: i for i in bot["instances"]}
    assert set(instances) == {"bot-1", "bot-2"}
    assert instances["bot-1"]["run_id"] == "r1"
    assert (instances["bot-1"]["executed"], instances["bot-1"]["cost_usd"]) == (30, 2.0)
    assert instances["bot-1"]["status"] == "running" and instances["bot-1"]["health"] == "active"
    assert c.get(AGENTS, params={"skip": 1, "limit": 1}).json()["data"][0]["agent_id"] == "other"
    missing = c.get(f"{AGENTS}/nobody")
    assert missing.status_code == 404 and missing.json()["field"] == "agent_id"


def test_cost_today_counts_only_todays_heartbeats(
    fleet: KillSwitchServer, api: Any, clock: Clock
) -> None:
    c = api(fleet).client
    send(c, beat("bot-1", cost_usd=4.0))
    clock.advance(86400)  # tomorrow
    send(c, beat("bot-1", cost_usd=5.5))
    bot = agent_of(c)
    assert bot["cost_usd"] == pytest.approx(5.5)
    assert bot["cost_usd_today"] == pytest.approx(1.5)


# -- health -------------------------------------------------------------------------------------


def test_health_active_stale_crashed_on_the_fleet_clock(
    fleet: KillSwitchServer, api: Any, clock: Clock
) -> None:
    c = api(fleet).client
    assert send(c, beat("bot-1", interval=10))["health"] == "active"
    clock.advance(29)
    assert health(c) == ("active", ["active"])
    clock.advance(2)  # three intervals missed
    assert health(c) == ("stale", ["stale"])
    clock.advance(68)  # almost ten: still only stale
    assert health(c) == ("stale", ["stale"])
    clock.advance(2)  # ten missed: vanished without a clean exit
    assert health(c) == ("crashed", ["crashed"])
    assert send(c, beat("bot-1", interval=10))["health"] == "active"  # back again
    assert health(c) == ("active", ["active"])


def test_health_killed_then_active_again(fleet: KillSwitchServer, api: Any) -> None:
    ops = api(fleet)
    c = ops.client
    send(c, beat("bot-1"))
    ks = ops.kill("agent", "bot", reason="runaway").json()
    assert health(c) == ("killed", ["killed"])
    assert agent_of(c)["kill_switch"]["id"] == ks["id"]
    answer = send(c, beat("bot-1", version=1))
    assert (answer["health"], answer["killed"], answer["reason"]) == ("killed", True, "runaway")
    ops.revive("agent", "bot")
    assert health(c) == ("active", ["active"])
    answer = send(c, beat("bot-1", version=2))
    assert (answer["health"], answer["killed"], answer["reason"]) == ("active", False, None)
    # A run kill kills the instances of that run; the agent shows it while nothing else runs.
    send(c, beat("bot-1", run_id="r1", version=2))
    ops.kill("run", "r1")
    assert health(c) == ("killed", ["killed"])
    send(c, beat("bot-2", run_id="r2", version=3))
    assert health(c) == ("active", ["killed", "active"])


def test_clean_exit_and_reported_crash(fleet: KillSwitchServer, api: Any, clock: Clock) -> None:
    c = api(fleet).client
    send(c, beat("bot-1"))
    send(c, beat("bot-2"))
    assert send(c, beat("bot-1", status="exited"))["health"] == "exited"
    assert health(c) == ("active", ["exited", "active"])
    answer = send(c, beat("bot-2", status="crashed", error="ValueError: bad row 7"))
    assert answer["health"] == "crashed"
    bot = agent_of(c)
    assert bot["health"] == "crashed"
    assert bot["instances"][1]["error"] == "ValueError: bad row 7"
    send(c, beat("bot-3"))
    send(c, beat("bot-3", status="exited"))
    clock.advance(10_000)  # a clean exit never turns into a crash, however long ago
    assert health(c) == ("crashed", ["exited", "crashed", "exited"])
    send(c, beat("lone", agent_id="tidy"))
    send(c, beat("lone", agent_id="tidy", status="exited"))
    assert health(c, "tidy") == ("exited", ["exited"])


def test_the_answer_carries_the_kill_state_when_the_instance_is_behind(
    fleet: KillSwitchServer, api: Any
) -> None:
    ops = api(fleet)
    c = ops.client
    ks = ops.kill("tool", "send_email").json()
    behind = send(c, beat("bot-1", version=0))
    assert behind["version"] == 1
    assert behind["snapshot"]["version"] == 1
    assert [k["id"] for k in behind["snapshot"]["active"]] == [ks["id"]]
    assert send(c, beat("bot-1", version=1))["snapshot"] is None
    # A version the organization has not reached is refused, and nothing is written.
    ahead = c.post("/api/v1/heartbeats", json=beat("new-1", agent_id="new", version=5))
    assert ahead.status_code == 409
    assert ahead.json()["field"] == "version"
    assert c.get(f"{AGENTS}/new").status_code == 404


def test_bad_heartbeats_name_the_field(fleet: KillSwitchServer, api: Any) -> None:
    c = api(fleet).client
    cases = {
        "interval": beat("i", interval=0),
        "executed": beat("i", executed=-1),
        "cost_usd": beat("i", cost_usd=-0.01),
        "status": beat("i", status="sleeping"),
        "instance_id": beat(""),
        "checkpoint": beat("i", checkpoint="a/b"),
    }
    for field, body in cases.items():
        response = c.post("/api/v1/heartbeats", json=body)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["field"] == field
    missing = {k: v for k, v in beat("i").items() if k != "version"}
    assert c.post("/api/v1/heartbeats", json=missing).json()["field"] == "version"
    assert c.get(AGENTS).json()["count"] == 0


# -- acknowledgements -------------------------------------------------------------------------


def test_acks_count_the_live_instances_a_kill_applies_to(fleet: KillSwitchServer, api: Any) -> None:
    ops = api(fleet)
    c = ops.client
    for instance, agent in (("bot-1", "bot"), ("bot-2", "bot"), ("other-1", "other")):
        send(c, beat(instance, agent_id=agent))
    send(c, beat("anon-1", agent_id=None))  # reports no agent: any agent kill may apply to it
    send(c, beat("gone-1"))
    send(c, beat("gone-1", status="exited"))  # not live
    assert c.get(ACKS, params={"target_type": "agent", "target_id": "bot"}).status_code == 404
    ks = ops.kill("agent", "bot").json()
    status = c.get(ACKS, params={"target_type": "agent", "target_id": "bot"}).json()
    assert (status["kill_switch_id"], status["version"]) == (ks["id"], 1)
    assert (status["live"], status["acknowledged"], status["slowest_ms"]) == (3, 0, None)
    assert {i["instance_id"] for i in status["instances"]} == {"bot-1", "bot-2", "anon-1"}

    ack = {"instance_id": "bot-1", "version": 1, "agent_id": "bot"}
    assert c.post("/api/v1/kill-switch/ack", json=ack).json() == {"acknowledged": 1}
    assert c.post("/api/v1/kill-switch/ack", json=ack).json() == {"acknowledged": 0}
    send(c, beat("bot-2", version=1))  # a heartbeat's version acknowledges too
    status = c.get(ACKS, params={"target_type": "agent", "target_id": "bot"}).json()
    assert (status["live"], status["acknowledged"]) == (3, 2)
    by_id = {i["instance_id"]: i for i in status["instances"]}
    assert by_id["bot-1"]["acknowledged"] and by_id["bot-1"]["latency_ms"] >= 0
    assert not by_id["anon-1"]["acknowledged"] and by_id["anon-1"]["latency_ms"] is None
    assert status["slowest_ms"] == max(by_id["bot-1"]["latency_ms"], by_id["bot-2"]["latency_ms"])

    # A tool kill applies to every live instance; one ack of a later version covers both kills.
    ops.kill("tool", "send_email")
    assert c.post(
        "/api/v1/kill-switch/ack", json={"instance_id": "other-1", "version": 2}
    ).json() == {"acknowledged": 1}
    tool = c.get(ACKS, params={"target_type": "tool", "target_id": "send_email"}).json()
    assert (tool["live"], tool["acknowledged"]) == (4, 1)
    assert c.post(
        "/api/v1/kill-switch/ack", json={"instance_id": "anon-1", "version": 2}
    ).json() == {"acknowledged": 2}
    # An instance only known from acks counts as live; it cannot claim the future.
    late = c.post("/api/v1/kill-switch/ack", json={"instance_id": "late", "version": 3})
    assert late.status_code == 409 and late.json()["field"] == "version"
    bad = c.post("/api/v1/kill-switch/ack", json={"instance_id": "x", "version": -1})
    assert bad.status_code == 422 and bad.json()["field"] == "version"


def test_acks_arriving_together_share_a_transaction(
    fleet: KillSwitchServer, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = api(fleet)
    ops.kill("agent", "bot")
    store = fleet.fleet.store
    batches: list[int] = []
    record_acks = store.record_acks

    def counted(reports: Any) -> Any:
        batches.append(len(reports))
        return record_acks(reports)

    monkeypatch.setattr(store, "record_acks", counted)
    bodies = [{"instance_id": f"bot-{i}", "version": 1, "agent_id": "bot"} for i in range(20)]
    bodies.append({"instance_id": "late", "version": 2})  # ahead: refused, the rest stored

    async def ack_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=fleet.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=bearer(ops.token)
        ) as client:
            return list(
                await asyncio.gather(
                    *(client.post("/api/v1/kill-switch/ack", json=body) for body in bodies)
                )
            )

    responses = asyncio.run(ack_all())
    assert [r.json() for r in responses[:20]] == [{"acknowledged": 1}] * 20
    assert responses[20].status_code == 409 and responses[20].json()["field"] == "version"
    assert sum(batches) == 21 and len(batches) < 21
    status = ops.client.get(ACKS, params={"target_type": "agent", "target_id": "bot"}).json()
    assert (status["live"], status["acknowledged"]) == (20, 20)


def test_kill_wait_returns_once_every_live_instance_applied_it(
    fleet: KillSwitchServer, api: Any
) -> None:
    ops = api(fleet, org="org_a", scopes=("operator",))
    guards = [Guard(fleet, organization_id="org_a", agent_id="bot") for _ in range(3)]
    for g in guards:
        g.start_heartbeat(interval=30)
    eventually(lambda: len(agent_of(ops.client)["instances"]) == 3)
    started = time.monotonic()
    response = ops.client.post(
        "/api/v1/kill-switch/kill",
        params={"wait": 10},
        json={"target_type": "agent", "target_id": "bot"},
    )
    assert response.status_code == 200
    assert response.headers["x-agentguard-acknowledged"] == "3/3"
    assert time.monotonic() - started < 5  # answered by the acks, not by the timeout
    status = ops.client.get(ACKS, params={"target_type": "agent", "target_id": "bot"}).json()
    assert (status["live"], status["acknowledged"]) == (3, 3)
    assert all(i["latency_ms"] is not None for i in status["instances"])
    for g in guards:
        g.close()


def test_kill_wait_gives_up_at_the_timeout(fleet: KillSwitchServer, api: Any) -> None:
    ops = api(fleet)
    send(ops.client, beat("silent-1"))  # alive, but it will never acknowledge
    started = time.monotonic()
    response = ops.client.post(
        "/api/v1/kill-switch/kill",
        params={"wait": 0.3},
        json={"target_type": "agent", "target_id": "bot"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert response.headers["x-agentguard-acknowledged"] == "0/1"
    assert 0.3 <= elapsed < 5
    plain = ops.kill("agent", "other")
    assert "x-agentguard-acknowledged" not in plain.headers
    too_long = ops.client.post(
        "/api/v1/kill-switch/kill",
        params={"wait": 61},
        json={"target_type": "agent", "target_id": "x"},
    )
    assert too_long.status_code == 422 and too_long.json()["field"] == "wait"
    assert ops.check("agent", "x").json()["is_killed"] is False  # nothing half-written


def test_ack_latency_is_an_opentelemetry_histogram(make_server: Any, api: Any) -> None:
    reader = InMemoryMetricReader()
    server = make_server(meter_provider=MeterProvider(metric_readers=[reader]))
    ops = api(server)
    send(ops.client, beat("bot-1"))
    ops.kill("agent", "bot")
    ops.client.post("/api/v1/kill-switch/ack", json={"instance_id": "bot-1", "version": 1})
    data = reader.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    propagation = metrics["agentguard.kill_switch.propagation"]
    assert propagation.unit == "ms"
    (point,) = propagation.data.data_points
    assert point.count == 1 and point.attributes == {"agentguard.target.type": "agent"}


# -- server rules -------------------------------------------------------------------------------


def test_budget_rule_kills_every_replica_of_the_agent(make_server: Any, database_url: str) -> None:
    server = make_server(
        database_url, rules=[BudgetRule(name="fleet-budget", limit_usd=10, window=3600)]
    )
    server.start()
    replicas = [Guard(server, organization_id="org_a", agent_id="bot") for _ in range(3)]
    beats = [g.start_heartbeat(interval=60) for g in replicas]
    calls: list[int] = []
    actions = [g.guarded_action(name="send_email")(calls.append) for g in replicas]
    for i, (g, hb) in enumerate(zip(replicas, beats, strict=True)):
        actions[i](i)
        g.report_metric(cost_usd=4.0)  # 3 x $4: no single replica is over $10
        answer = hb.beat()
        assert answer is not None
    assert answer.killed is True
    ks = server.store.get_active("org_a", "agent", "bot")
    assert ks is not None and ks.killed_by == "rule:fleet-budget"
    assert ks.reason == ("spent $12.00 in 3600 s across all instances of agent 'bot'; limit $10.00")
    for action in actions:  # every replica stops
        with pytest.raises(PolicyViolationError, match="limit \\$10.00"):
            action(99)
    assert calls == [0, 1, 2]
    # Revived, the rule counts afresh: a cent more does not trip it again.
    server.store.revive("org_a", "agent", "bot", actor="usr_ops")
    replicas[0].report_metric(cost_usd=0.01)
    assert beats[0].beat() is not None
    assert server.store.get_active("org_a", "agent", "bot") is None
    for g in replicas:
        g.close()


def test_observe_mode_records_without_killing(
    make_server: Any, database_url: str, api: Any
) -> None:
    server = make_server(
        database_url,
        rules=[BudgetRule(name="budget-watch", limit_usd=1, window=60, mode="observe")],
    )
    ops = api(server)
    send(ops.client, beat("bot-1", cost_usd=1.5))
    send(ops.client, beat("bot-1", cost_usd=1.6))  # counted afresh after the observation
    assert ops.check("agent", "bot").json()["is_killed"] is False
    observed = ops.get("/api/v1/interventions", type="OBSERVED").json()
    assert observed["count"] == 1
    (record,) = observed["data"]
    assert (record["target_type"], record["target_id"]) == ("agent", "bot")
    assert record["killed_by"] == "rule:budget-watch"
    assert (
        record["reason"] == "spent $1.50 in 60 s across all instances of agent 'bot'; limit $1.00"
    )


@pytest.mark.parametrize(
    ("rule", "fields", "reason"),
    [
        (
            RateRule(name="rate", limit=100, window=60),
            [{"executed": 60}, {"executed": 120}],
            "120 guarded calls in 60 s across all instances of agent 'bot'; limit 100",
        ),
        (
            ErrorRateRule(name="errors", max_rate=0.5, min_calls=20, window=60),
            [{"executed": 10, "failed": 9}, {"executed": 20, "failed": 15}],
            "15 of 20 calls failed in 60 s across all instances of agent 'bot' (75%); limit 50%",
        ),
    ],
)
def test_rate_and_error_rate_rules_trip_on_fleet_totals(
    make_server: Any, api: Any, rule: Any, fields: list[dict[str, int]], reason: str
) -> None:
    ops = api(make_server(rules=[rule]))
    first, second = fields
    send(ops.client, beat("bot-1", **first))
    assert ops.check("agent", "bot").json()["is_killed"] is False
    send(ops.client, beat("bot-2", **{k: v - first[k] for k, v in second.items()}))
    killed = ops.get("/api/v1/kill-switch/active").json()["data"]
    assert [(k["target_id"], k["killed_by"], k["reason"]) for k in killed] == [
        ("bot", f"rule:{rule.name}", reason)
    ]


@pytest.mark.parametrize(
    "rule",
    [
        LoopRule(name="loop", repeats=3),
        BudgetRule(name="per-run", per="run"),
        RateRule(name="per-tool", tool="send_email"),
    ],
)
def test_rules_a_server_cannot_evaluate_are_refused(rule: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        KillSwitchServer(rules=[rule])
    assert caught.value.field == "rules"


# -- checkpoints over HTTP ----------------------------------------------------------------------


def test_checkpoints_over_http(fleet: KillSwitchServer, api: Any) -> None:
    agent = api(fleet, scopes=("agent",)).client
    reader = api(fleet, scopes=("read",)).client
    url = "/api/v1/checkpoints/email-campaign.replica-0"
    assert agent.get(url).status_code == 404
    stored = agent.put(url, json={"state": {"next": 120, "done": [1, 2]}})
    assert stored.status_code == 200
    assert stored.json()["state"] == {"next": 120, "done": [1, 2]}
    got = agent.get(url).json()
    assert got["key"] == "email-campaign.replica-0" and got["state"] == {
        "next": 120,
        "done": [1, 2],
    }
    assert reader.get(url).status_code == 403  # checkpoints belong to agents and operators
    too_big = agent.put(url, json={"state": "x" * (256 * 1024)})
    assert too_big.status_code == 422 and too_big.json()["field"] == "state"
    assert "262,144" in too_big.json()["detail"]
    assert agent.get(url).json()["state"] == {"next": 120, "done": [1, 2]}  # unchanged
    assert agent.put(url, json={}).json()["field"] == "state"
    assert agent.put(url, json={"state": 1, "extra": 2}).json()["field"] == "extra"
    bad_key = agent.put("/api/v1/checkpoints/.hidden", json={"state": 1})
    assert bad_key.status_code == 422 and bad_key.json()["field"] == "key"


def test_remote_guard_checkpoints_through_the_api(start_uvicorn: Any, database_url: str) -> None:
    setup = KillSwitchServer(database_url)
    token = setup.create_key("org_a", owner="bot", scopes=["agent"], agents=["*"])
    process = start_uvicorn(database_url)
    guard = Guard(process.url, api_key=token, mode="strict")
    guard.checkpoint("campaign.r0", {"next": 7})
    assert guard.load_checkpoint("campaign.r0") == {"next": 7}
    assert guard.load_checkpoint("campaign.r1", default="none") == "none"
    assert setup.store.load_checkpoint("org_a", "campaign.r0") == '{"next":7}'
    with pytest.raises(InvalidInputError) as too_big:
        guard.checkpoint("campaign.r0", "x" * (256 * 1024))  # refused before it is sent
    assert too_big.value.field == "state"
    setup.close()
    with pytest.raises(InvalidInputError) as caught:
        guard.checkpoint("campaign/r0", {"next": 7})
    assert caught.value.field == "key"
    guard.close()


# -- real processes ----------------------------------------------------------------------------

AGENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from agentguard import Guard

    url, key, agent_id, ending = sys.argv[1:5]
    if ending == "term-own":  # the program's own SIGTERM handler is kept
        import signal
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    guard = Guard(url, api_key=key, agent_id=agent_id)
    guard.wait_until_synced(10)
    heartbeat = guard.start_heartbeat(interval=0.2)
    print("ready", flush=True)
    time.sleep(0.6)
    if ending == "raise":
        raise RuntimeError("the model returned garbage")
    if ending in ("hang", "term", "term-own"):
        time.sleep(600)
    """
)


def test_real_processes_exit_crash_and_vanish(
    start_uvicorn: Any, database_url: str, tmp_path: Path
) -> None:
    setup = KillSwitchServer(database_url)
    agent_key = setup.create_key("org_a", owner="bot", scopes=["agent"], agents=["*"])
    reader_key = setup.create_key("org_a", owner="usr_ops", scopes=["operator"])
    setup.close()
    server = start_uvicorn(database_url)
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    children = {
        ending: subprocess.Popen(
            [sys.executable, str(script), server.url, agent_key, f"bot-{ending}", ending],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ending in ("exit", "raise", "hang", "term", "term-own")
    }
    client = httpx.Client(base_url=server.url, headers=bearer(reader_key), timeout=5)

    def agent(name: str) -> dict[str, Any]:
        response = client.get(f"{AGENTS}/bot-{name}")
        return response.json() if response.status_code == 200 else {"health": None}

    try:
        eventually(lambda: agent("hang")["health"] == "active", timeout=20)
        # The hanging agent's guard acknowledges a kill through its stream.
        killed = client.post(
            "/api/v1/kill-switch/kill",
            params={"wait": 10},
            json={"target_type": "agent", "target_id": "bot-hang"},
        )
        assert killed.headers["x-agentguard-acknowledged"] == "1/1"
        eventually(lambda: agent("hang")["health"] == "killed")
        client.post(
            "/api/v1/kill-switch/revive", json={"target_type": "agent", "target_id": "bot-hang"}
        )
        eventually(lambda: agent("hang")["health"] == "active")
        assert children["exit"].wait(20) == 0
        assert children["raise"].wait(20) == 1
        eventually(lambda: agent("exit")["health"] == "exited")
        crashed = agent("raise")
        assert crashed["health"] == "crashed", crashed
        assert "RuntimeError: the model returned garbage" in crashed["instances"][0]["error"]
        # SIGTERM (a deploy): reported as a clean exit, and the process still ends by it.
        for ending in ("term", "term-own"):
            eventually(lambda e=ending: agent(e)["health"] == "active", timeout=20)
            os.kill(children[ending].pid, signal.SIGTERM)
        assert children["term"].wait(20) == -signal.SIGTERM
        assert children["term-own"].wait(20) == 3  # its own handler ran, then atexit reported
        for ending in ("term", "term-own"):
            eventually(
                lambda e=ending: agent(e)["health"] == "exited", message=lambda e=ending: agent(e)
            )
        os.kill(children["hang"].pid, signal.SIGKILL)  # no chance to say goodbye
        eventually(lambda: agent("hang")["health"] == "stale", timeout=5)
        eventually(lambda: agent("hang")["health"] == "crashed", timeout=5)
        assert agent("hang")["instances"][0]["error"] is None
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.wait(5)
        client.close()
