"""``GET /metrics`` under ``agentguard serve --workers 2`` (a real subprocess, over loopback),
on SQLite and PostgreSQL: whichever worker answers a scrape, it reports the whole server.

Kills, interventions, heartbeats and acknowledgements land on either worker, and change
streams are held open on both (the test reads the database to see that both hold some);
every scrape on a fresh connection must then give the same, correct values. Webhook
deliveries are sent by the senders of both workers, and counted once each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from agentguard.server.store.counters import ACK_LATENCY
from agentguard.server.store.database import Database
from agentguard.server.store.tables import open_streams
from support import eventually
from support.api import bearer
from support.cli import Server, start_server
from support.metrics import by_label, expected_buckets, histogram, parse
from support.processes import stop
from support.receiver import Receiver
from support.stream_client import StreamReader

ORG = "org_metrics"
WHEN = "2026-04-18T17:00:00Z"
SCRAPES = 12


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """``agentguard serve --workers 2`` with a server rule, on a fresh database."""
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("make_postgres_url")()
    rule = "budget:name=spend,limit_usd=4,window=3600"
    server = start_server(tmp_path, "--workers", "2", "--rule", rule, database_url=url)
    yield server
    stop(server.popen)


def processes_holding_streams(database_url: str) -> set[str]:
    database = Database(database_url)
    try:
        with database.read() as conn:
            rows = conn.execute(
                select(open_streams.c.process_id).where(
                    open_streams.c.organization_id == ORG, open_streams.c.streams > 0
                )
            ).scalars()
            return set(rows)
    finally:
        database.dispose()


def test_every_worker_answers_for_the_whole_server(served: Server) -> None:
    api = f"{served.url}/api/v1"
    admin = httpx.Client(base_url=api, headers=bearer(served.key("admin", org=ORG)))
    agent_key = served.key("agent", org=ORG)
    agent = httpx.Client(base_url=api, headers=bearer(agent_key))
    metrics_key = served.key("metrics", org=ORG)

    def beat(instance: str, agent_id: str, **fields: Any) -> None:
        body = {"instance_id": instance, "agent_id": agent_id, "interval": 60, "version": 0,
                "executed": 0, "refused": 0, "failed": 0, "cost_usd": 0, **fields}  # fmt: skip
        assert agent.post("/heartbeats", json=body).status_code == 200

    beat("w-killed", "mailer")
    beat("w-active", "planner")
    beat("w-exited", "planner", status="exited")
    for target_type, target_id in (("agent", "mailer"), ("tool", "send_email"), ("run", "r-1")):
        target = {"target_type": target_type, "target_id": target_id}
        assert admin.post("/kill-switch/kill", json=target).is_success
    revived = admin.post("/kill-switch/revive", json={"target_type": "run", "target_id": "r-1"})
    assert revived.is_success
    version = admin.get("/kill-switch/state").json()["version"]
    for instance in ("w-killed", "w-active"):
        acked = agent.post("/kill-switch/ack", json={"instance_id": instance, "version": version})
        assert acked.status_code == 200, acked.text
    latencies = [
        i["latency_ms"] / 1000
        for target_type, target_id in (("agent", "mailer"), ("tool", "send_email"))
        for i in admin.get("/kill-switch/acks", params={"target_type": target_type,
                                                        "target_id": target_id}).json()["instances"]
        if i["latency_ms"] is not None
    ]  # fmt: skip
    assert len(latencies) == 3
    for n in range(6):
        items = [{"id": f"iv-{n}-{i}", "type": "HARD_BLOCK" if i else "UNAVAILABLE",
                  "action": "send_email", "target_type": "agent", "target_id": "mailer",
                  "agent_id": "mailer", "occurred_at": WHEN} for i in range(5)]  # fmt: skip
        for _ in range(2):  # each batch twice, perhaps to both workers: stored once
            assert agent.post("/interventions", json={"interventions": items}).is_success
    beat("w-spender", "spender", cost_usd=5.0)  # the server rule kills it
    assert admin.get(
        "/kill-switch/check", params={"target_type": "agent", "target_id": "spender"}
    ).json()["is_killed"]

    # Streams on both workers: opened until both hold some (each on its own connection).
    streams: list[StreamReader] = []
    try:
        while len(processes_holding_streams(served.database_url)) < 2:
            assert len(streams) < 24, "every stream landed on one worker"
            streams.append(StreamReader(served.url, headers=bearer(agent_key)))
            assert streams[-1].status == 200
            eventually(lambda: _total(served.database_url) == len(streams), 20)

        expected = {
            "kills": {
                "agent": 2,
                "tool": 1,
                "run": 0,
                "mission": 0,
                "organization": 0,
                "selector": 0,
            },  # fmt: skip
            "instances": {"active": 1, "killed": 2, "exited": 1, "stale": 0, "crashed": 0},
            "streams": len(streams),
            "interventions": {"HARD_BLOCK": 24, "UNAVAILABLE": 6, "OBSERVED": 0, "CANCELLED": 0},
            "rule_trips": {"spend": 1},
            "acks": (expected_buckets([*ACK_LATENCY.buckets, float("inf")], latencies), 3),
            "database_unavailable": 0,
        }
        for _ in range(SCRAPES):  # a new connection each time: either worker may answer
            answer = httpx.get(f"{served.url}/metrics", headers=bearer(metrics_key))
            assert answer.status_code == 200, answer.text
            samples = parse(answer.text)
            buckets, count, total = histogram(samples, "agentguard_ack_latency_seconds")
            assert total == pytest.approx(sum(latencies))
            assert {
                "kills": by_label(samples, "agentguard_kills_active", "target_type"),
                "instances": by_label(samples, "agentguard_instances", "health"),
                "streams": samples["agentguard_streams_open"][()],
                "interventions": by_label(samples, "agentguard_interventions_total", "type"),
                "rule_trips": by_label(samples, "agentguard_rule_trips_total", "rule"),
                "acks": (buckets, count),
                "database_unavailable": samples["agentguard_database_unavailable"][()],
            } == expected
    finally:
        for reader in streams:
            reader.close()
    # Closed streams leave the count within a few seconds, on both workers.
    eventually(lambda: _total(served.database_url) == 0, 20)
    admin.close()
    agent.close()


def _total(database_url: str) -> int:
    database = Database(database_url)
    try:
        with database.read() as conn:
            rows = conn.execute(
                select(open_streams.c.streams).where(open_streams.c.organization_id == ORG)
            ).scalars()
            return sum(rows)
    finally:
        database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served_webhooks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """``agentguard serve --workers 2`` sending webhooks to loopback, retried for 2 s."""
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("make_postgres_url")()
    options = ("--workers", "2", "--webhooks-allow-private", "--webhook-retry-for", "2s")
    server = start_server(tmp_path, *options, database_url=url)
    yield server
    stop(server.popen)


def test_webhook_deliveries_and_failures_are_counted_once_whichever_worker_sends(
    served_webhooks: Server,
) -> None:
    served = served_webhooks
    api = f"{served.url}/api/v1"
    admin = httpx.Client(base_url=api, headers=bearer(served.key("admin", org=ORG)))
    metrics_key = served.key("metrics", org=ORG)
    with Receiver() as good, Receiver() as bad:
        bad.answer = lambda request: (500, {}, b"down")
        hooks = {}
        for name, receiver, fmt, events in (
            ("good", good, "standard", ["kill", "revive"]),
            ("bad", bad, "slack", ["kill"]),
        ):
            made = admin.post("/webhooks", json={"url": receiver.url(), "format": fmt,
                                                 "events": events, "name": name})  # fmt: skip
            assert made.status_code == 200, made.text
            hooks[name] = made.json()["id"]
        agents = [f"mailer-{n}" for n in range(4)]
        for agent_id in agents:  # on either worker, each a new connection
            target = {"target_type": "agent", "target_id": agent_id}
            assert httpx.post(f"{api}/kill-switch/kill", json=target,
                              headers=admin.headers).is_success  # fmt: skip
        for agent_id in agents[:3]:
            target = {"target_type": "agent", "target_id": agent_id}
            assert httpx.post(f"{api}/kill-switch/revive", json=target,
                              headers=admin.headers).is_success  # fmt: skip

        def log(name: str) -> list[dict[str, Any]]:
            answer = admin.get(f"/webhooks/{hooks[name]}/deliveries", params={"limit": 100})
            assert answer.status_code == 200, answer.text
            return list(answer.json()["data"])

        def settled(name: str, count: int) -> bool:
            rows = log(name)
            return len(rows) == count and all(d["status"] != "pending" for d in rows)

        eventually(lambda: settled("good", 7) and settled("bad", 4), 30)
        assert {d["status"] for d in log("good")} == {"delivered"}
        failed = log("bad")
        assert {d["status"] for d in failed} == {"failed"}
        attempts = sum(d["attempts"] for d in failed)
        assert attempts >= 4
        assert len(good.received()) == 7 and len(bad.received()) == attempts

    good_labels = {"webhook": hooks["good"], "format": "standard"}
    bad_labels = {"webhook": hooks["bad"], "format": "slack"}
    expected = {
        "agentguard_webhook_deliveries_total": {
            labels(**good_labels, event="kill"): 4.0,
            labels(**good_labels, event="revive"): 3.0,
        },
        "agentguard_webhook_failures_total": {labels(**bad_labels, event="kill"): float(attempts)},
        "agentguard_webhook_given_up_total": {labels(**bad_labels, event="kill"): 4.0},
    }
    for _ in range(SCRAPES):  # a new connection each time: either worker may answer
        answer = httpx.get(f"{served.url}/metrics", headers=bearer(metrics_key))
        assert answer.status_code == 200, answer.text
        samples = parse(answer.text)
        assert {name: samples.get(name, {}) for name in expected} == expected
    admin.close()


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))
