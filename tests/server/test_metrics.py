"""``GET /metrics``: every metric counts what the server recorded, per organization, parsed back
with prometheus_client's own parser; counters outlive pruning; who may read it; the formats;
and a database outage shown as ``agentguard_database_unavailable 1`` (PostgreSQL stopped).

Several workers and replicas: tests/server/test_metrics_workers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from starlette.testclient import TestClient

from agentguard.rules import BudgetRule
from agentguard.server import KillSwitchServer
from agentguard.server.store.counters import ACK_LATENCY
from support import eventually
from support.api import Api, bearer
from support.live import Live, start_live
from support.metrics import by_label, expected_buckets, histogram, parse
from support.pg_cluster import PrivateCluster
from support.processes import Process

ACK_BOUNDS = [*ACK_LATENCY.buckets, float("inf")]
WHEN = "2026-04-18T17:00:00Z"


class Clock:
    """The fleet's clock, moved by the test (health is judged by it)."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def scrape(api: Api, **headers: str) -> dict[str, Any]:
    answer = api.client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(answer.text)


def intervention(n: int, kind: str = "HARD_BLOCK") -> dict[str, Any]:
    return {"id": f"iv-{n}", "type": kind, "action": "send_email", "target_type": "agent",
            "target_id": "mailer", "agent_id": "mailer", "occurred_at": WHEN}  # fmt: skip


def test_every_metric_counts_what_the_server_recorded(
    make_server: Callable[..., KillSwitchServer], database_url: str
) -> None:
    clock = Clock()
    rules = [
        BudgetRule(name="spend-watch", limit_usd=2, mode="observe"),
        BudgetRule(name="spend", limit_usd=4),
    ]
    server = make_server(database_url, rules=rules, clock=clock)
    admin = Api(server, "org_a", ["admin"], "usr_ops")
    agent = Api(server, "org_a", ["agent"], "bot")
    reader = Api(server, "org_a", ["metrics"], "prometheus")
    other = Api(server, "org_b", ["admin"], "usr_b")

    first = scrape(reader)
    assert by_label(first, "agentguard_rule_trips_total", "rule") == {"spend-watch": 0, "spend": 0}
    assert set(by_label(first, "agentguard_interventions_total", "type")) == {
        "HARD_BLOCK", "OBSERVED", "UNAVAILABLE", "CANCELLED"}  # fmt: skip

    def beat(instance: str, agent_id: str, **fields: Any) -> None:
        body = {"instance_id": instance, "agent_id": agent_id, "interval": 10, "version": 0,
                "executed": 0, "refused": 0, "failed": 0, "cost_usd": 0}  # fmt: skip
        answer = agent.client.post("/api/v1/heartbeats", json={**body, **fields})
        assert answer.status_code == 200, answer.text

    def b_beat() -> None:
        other.client.post("/api/v1/heartbeats", json={"instance_id": "b-1", "agent_id": "mailer",
                          "interval": 10, "version": 0, "executed": 0, "refused": 0, "failed": 0,
                          "cost_usd": 0})  # fmt: skip

    # Organization B has something of everything; none of it may show in A's metrics.
    assert other.kill("agent", "mailer").status_code == 200
    other.client.post("/api/v1/interventions", json={"interventions": [intervention(0)]})
    b_beat()

    # Instances of every health, judged at the fleet's clock.
    beat("i-ancient", "planner")  # silent for longer than any interval allows: crashed
    clock.advance(200)
    beat("i-stale", "planner")
    beat("i-vanished", "planner", interval=1)
    beat("i-exited", "planner", status="exited")
    beat("i-crashed", "planner", status="crashed", error="boom")
    clock.advance(40)
    beat("i-killed", "mailer")
    beat("i-active", "planner")

    # Kills: two stay active, one is revived; then instances acknowledge what applies to them.
    for target_type, target_id in (("agent", "mailer"), ("tool", "send_email"), ("run", "r-9")):
        assert admin.kill(target_type, target_id).status_code == 200
    assert admin.revive("run", "r-9").status_code == 200
    version = admin.get("/api/v1/kill-switch/state").json()["version"]
    for instance in ("i-killed", "i-active"):
        acked = agent.client.post(
            "/api/v1/kill-switch/ack", json={"instance_id": instance, "version": version}
        )
        assert acked.status_code == 200, acked.text
    latencies = [
        i["latency_ms"] / 1000
        for target in (("agent", "mailer"), ("tool", "send_email"))
        for i in admin.get(
            "/api/v1/kill-switch/acks", target_type=target[0], target_id=target[1]
        ).json()["instances"]  # fmt: skip
        if i["latency_ms"] is not None
    ]
    assert len(latencies) == 3  # i-killed: the agent and the tool; i-active: the tool

    # Interventions, one batch sent twice (stored once); and a spender the rules catch.
    batch = {"interventions": [*(intervention(n) for n in range(1, 4)),
                               intervention(4, "UNAVAILABLE")]}  # fmt: skip
    for _ in range(2):
        assert agent.client.post("/api/v1/interventions", json=batch).status_code == 200
    beat("i-spender", "spender", cost_usd=5.0)
    assert admin.check("agent", "spender").json()["is_killed"] is True

    samples = scrape(reader)
    assert by_label(samples, "agentguard_kills_active", "target_type") == {
        "agent": 2, "tool": 1, "run": 0, "mission": 0, "organization": 0,
        "selector": 0}  # fmt: skip
    assert by_label(samples, "agentguard_instances", "health") == {
        "active": 1, "stale": 1, "killed": 2, "crashed": 3, "exited": 1}  # fmt: skip
    assert samples["agentguard_streams_open"] == {(): 0}
    interventions = {
        "HARD_BLOCK": 3,
        "UNAVAILABLE": 1,
        "OBSERVED": 1,
        "CANCELLED": 0,
    }  # OBSERVED: spend-watch
    assert by_label(samples, "agentguard_interventions_total", "type") == interventions
    assert samples["agentguard_rule_trips_total"] == {
        (("mode", "enforce"), ("rule", "spend")): 1,
        (("mode", "observe"), ("rule", "spend-watch")): 1,
    }
    buckets, count, total = histogram(samples, "agentguard_ack_latency_seconds")
    assert buckets == expected_buckets(ACK_BOUNDS, latencies)
    assert count == 3 and total == pytest.approx(sum(latencies))
    assert samples["agentguard_database_unavailable"] == {(): 0}

    # Organization B sees its own, and nothing of A's.
    b_beat()
    theirs = scrape(other)
    assert by_label(theirs, "agentguard_kills_active", "target_type")["agent"] == 1
    assert by_label(theirs, "agentguard_interventions_total", "type")["HARD_BLOCK"] == 1
    assert by_label(theirs, "agentguard_instances", "health")["killed"] == 1
    assert set(by_label(theirs, "agentguard_rule_trips_total", "rule").values()) == {0}

    # Counters never go down: pruning every instance, acknowledgement and intervention leaves
    # them; the instance gauge follows the rows.
    server.store.prune(clock.now + timedelta(days=1), interventions_too=True)
    pruned = scrape(reader)
    assert set(by_label(pruned, "agentguard_instances", "health").values()) == {0}
    for name in (
        "agentguard_interventions_total",
        "agentguard_rule_trips_total",
        "agentguard_ack_latency_seconds_bucket",
        "agentguard_ack_latency_seconds_sum",
    ):
        assert pruned[name] == samples[name], name  # fmt: skip


def test_who_may_read_the_metrics() -> None:
    server = KillSwitchServer()
    try:
        keys = {s: Api(server, "org_a", [s], f"usr_{s}") for s in ("admin", "operator", "read",
                                                                   "metrics", "agent")}  # fmt: skip
        for scope in ("admin", "operator", "read", "metrics"):
            assert keys[scope].client.get("/metrics").status_code == 200, scope
        refused = keys["agent"].client.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["required_scope"] == "metrics"
        anonymous = TestClient(server.app)
        assert anonymous.get("/metrics").status_code == 401
        wrong = anonymous.get("/metrics", headers=bearer("ag_Zz9Zz9Zz_" + "Q" * 40))
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        # A metrics key reads nothing else.
        metrics = keys["metrics"]
        for path in ("/api/v1/kill-switch/active", "/api/v1/audit", "/api/v1/agents"):
            assert metrics.client.get(path).status_code == 403, path
        assert metrics.check().status_code == 403
        assert metrics.kill().status_code == 403
    finally:
        server.close()


def test_openmetrics_when_asked_and_plain_text_for_junk() -> None:
    server = KillSwitchServer()
    try:
        reader = Api(server, "org_a", ["metrics"], "prometheus")
        answer = reader.client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        names = {f.name for f in openmetrics_families(answer.text)}
        assert {"agentguard_interventions", "agentguard_ack_latency_seconds"} <= names
        for junk in ("application/openmetrics-text; version=x.y", "text/plain; version=a.b",
                     "*/*", "\x7f", ""):  # fmt: skip
            assert scrape(reader, Accept=junk)["agentguard_database_unavailable"] == {(): 0}
    finally:
        server.close()


@pytest.mark.postgres
def test_a_stopped_database_is_a_metric_not_a_failed_scrape(
    start_process: Callable[..., Process], private_postgres: PrivateCluster
) -> None:
    """While PostgreSQL is stopped a scrape still answers, with the outage as its one metric
    (for a key this process verified before), and the numbers are back once it is."""
    live: Live = start_live(start_process, private_postgres.create_database())
    assert live.kill("rogue").status_code == 200

    def metrics() -> httpx.Response:
        return httpx.get(f"{live.url}/metrics", headers=bearer(live.admin), timeout=10)

    before = parse(metrics().text)
    assert by_label(before, "agentguard_kills_active", "target_type")["agent"] == 1
    private_postgres.stop()
    try:
        answer = metrics()
        assert answer.status_code == 200, answer.text
        assert parse(answer.text) == {"agentguard_database_unavailable": {(): 1}}
        assert "database is unavailable" in live.process.output()  # logged, once
    finally:
        private_postgres.start()

    def back() -> bool:
        samples = parse(metrics().text)
        return samples["agentguard_database_unavailable"] == {(): 0} and (
            by_label(samples, "agentguard_kills_active", "target_type").get("agent") == 1
        )

    eventually(back, 30)


def test_a_source_added_to_the_server_is_scraped_too() -> None:
    """``server.metrics.add(source)``: how more metrics join (webhooks' will, for one)."""
    from prometheus_client.metrics_core import GaugeMetricFamily

    server = KillSwitchServer()

    class KeyMetrics:
        def collect(self, organization_id: str) -> Any:
            keys, _ = server.keys.list(organization_id)
            yield GaugeMetricFamily("agentguard_test_keys", "API keys", value=len(keys))

    try:
        server.metrics.add(KeyMetrics())
        reader = Api(server, "org_a", ["metrics"], "prometheus")
        Api(server, "org_a", ["agent"], "bot")
        Api(server, "org_b", ["admin"], "usr_b")
        assert scrape(reader)["agentguard_test_keys"] == {(): 2}
    finally:
        server.close()
