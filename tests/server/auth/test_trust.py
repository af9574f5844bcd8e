"""Trust inside one organization: an agent key speaks only for the agents it names.

Regression tests of an adversarial review by an attacker holding agent keys: forged rule
observations that disabled server rules, heartbeats and checkpoints written for other agents,
and forged kill acknowledgements. Each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from agentguard.rules import BudgetRule
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import api_keys
from support import eventually
from support.api import Api, bearer

BUDGET = BudgetRule("fleet-budget", limit_usd=100, window=3600)


def beat(agent_id: str | None, instance_id: str, cost: float = 0.0, **extra: Any) -> dict[str, Any]:
    body = {"instance_id": instance_id, "interval": 10, "executed": 1, "refused": 0,
            "failed": 0, "cost_usd": cost, "version": 0, **extra}  # fmt: skip
    if agent_id is not None:
        body["agent_id"] = agent_id
    return body


def forged_observation(occurred_at: str, iv_id: str = "iv-forged") -> dict[str, Any]:
    return {
        "id": iv_id,
        "type": "OBSERVED",
        "action": "rule:fleet-budget",
        "killed_by": "rule:fleet-budget",
        "target_type": "agent",
        "target_id": "spender",
        "agent_id": "spender",
        "occurred_at": occurred_at,
    }


def killed(admin: Api, agent_id: str) -> bool:
    return bool(admin.check("agent", agent_id).json()["is_killed"])


@pytest.fixture
def ruled(make_server: Any, database_url: str) -> KillSwitchServer:
    server: KillSwitchServer = make_server(database_url, rules=[BUDGET])
    server.start()
    return server


# -- finding 1: an agent key disabled server rules --------------------------------------------


def test_a_forged_rule_observation_does_not_disable_server_rules(
    ruled: KillSwitchServer, api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = api(ruled)
    fleet_key = api(ruled, scopes=("agent",), agents=["*"])  # may report for spender
    now = datetime.now(timezone.utc).isoformat()
    # Accepted (the key speaks for spender), but rules never read what clients report.
    sent = fleet_key.client.post(
        "/api/v1/interventions", json={"interventions": [forged_observation(now)]}
    )
    assert sent.status_code == 200, sent.text
    for agent in ("spender", "control"):
        answer = fleet_key.client.post("/api/v1/heartbeats", json=beat(agent, f"{agent}-1", 1e6))
        assert answer.status_code == 200, answer.text
    assert killed(admin, "control")
    assert killed(admin, "spender"), "a reported OBSERVED record kept the rule from killing"


@pytest.mark.parametrize(
    "occurred_at", ["2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1999-12-31T23:59:59Z"]
)
def test_reported_times_outside_a_sane_window_are_refused(
    ruled: KillSwitchServer, api: Any, caplog: pytest.LogCaptureFixture, occurred_at: str
) -> None:
    admin = api(ruled)
    fleet_key = api(ruled, scopes=("agent",), agents=["*"])
    with caplog.at_level(logging.WARNING, logger="agentguard"):
        sent = fleet_key.client.post(
            "/api/v1/interventions", json={"interventions": [forged_observation(occurred_at)]}
        )
        assert sent.status_code == 422, sent.text
        assert sent.json()["field"] == "interventions.0.occurred_at"
        assert admin.get("/api/v1/interventions").json()["count"] == 0  # nothing half-written
        for _ in range(3):
            answer = fleet_key.client.post("/api/v1/heartbeats", json=beat("spender", "s-1", 1e6))
            assert answer.status_code == 200, answer.text
    assert killed(admin, "spender")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a traceback was logged"


def test_five_minutes_ahead_is_the_limit(ruled: KillSwitchServer, api: Any) -> None:
    fleet_key = api(ruled, scopes=("agent",), agents=["*"])
    soon = (datetime.now(timezone.utc) + timedelta(minutes=4)).isoformat()
    later = (datetime.now(timezone.utc) + timedelta(minutes=6)).isoformat()
    body = {**forged_observation(soon), "type": "HARD_BLOCK", "killed_by": None}
    assert fleet_key.client.post("/api/v1/interventions", json={"interventions": [body]}).is_success
    body = {**body, "id": "iv-later", "occurred_at": later}
    refused = fleet_key.client.post("/api/v1/interventions", json={"interventions": [body]})
    assert refused.status_code == 422 and refused.json()["field"] == "interventions.0.occurred_at"


def test_observe_mode_rules_count_afresh_from_their_own_observation(
    make_server: Any, database_url: str, api: Any
) -> None:
    """An observing rule still reads back its own (server-written) observation."""
    server: KillSwitchServer = make_server(
        database_url, rules=[BudgetRule("watch", limit_usd=100, window=3600, mode="observe")]
    )
    key = api(server, scopes=("agent",), agents=["spender"])
    admin = api(server)
    assert key.client.post("/api/v1/heartbeats", json=beat("spender", "s-1", 500)).is_success
    assert key.client.post("/api/v1/heartbeats", json=beat("spender", "s-1", 501)).is_success
    observed = admin.get("/api/v1/interventions", type="OBSERVED").json()
    assert observed["count"] == 1  # the second heartbeat counts only what came after
    audit = admin.get("/api/v1/audit", action="rule.observed").json()["data"]
    assert len(audit) == 1 and audit[0]["actor"] == "rule:watch"
    assert "instance 's-1'" in audit[0]["detail"] and key.key_id in audit[0]["detail"]
    assert not killed(admin, "spender")


# -- finding 2: an agent key spoke for other agents -------------------------------------------


def test_an_agent_key_cannot_report_cost_for_another_agent(
    ruled: KillSwitchServer, api: Any
) -> None:
    admin = api(ruled)
    attacker = api(ruled, scopes=("agent",), agents=["email-campaign"])
    forged = attacker.client.post("/api/v1/heartbeats", json=beat("payments-bot", "p-1", 1e6))
    assert forged.status_code == 403, forged.text
    assert forged.json()["field"] == "agent_id" and "'payments-bot'" in forged.json()["detail"]
    assert not killed(admin, "payments-bot")
    assert admin.get("/api/v1/agents/payments-bot").status_code == 404  # nothing recorded
    # Without an agent id, its heartbeat is for no agent it speaks for.
    anonymous = attacker.client.post("/api/v1/heartbeats", json=beat(None, "p-2", 1e6))
    assert anonymous.status_code == 403 and anonymous.json()["field"] == "agent_id"
    # Its own agent: accepted, and a rule's kill names the key and instance that tripped it.
    own = attacker.client.post("/api/v1/heartbeats", json=beat("email-campaign", "e-1", 1e6))
    assert own.status_code == 200 and own.json()["killed"] is True
    (entry,) = admin.get("/api/v1/audit", action="kill").json()["data"]
    assert entry["actor"] == "rule:fleet-budget" and entry["target_id"] == "email-campaign"
    assert attacker.key_id in entry["detail"] and "instance 'e-1'" in entry["detail"]


def test_prefix_and_any_agent_bindings(ruled: KillSwitchServer, api: Any) -> None:
    billing = api(ruled, scopes=("agent",), agents=["billing-*", "refunds"])
    for agent, status in (("billing-eu", 200), ("refunds", 200), ("refunds-2", 403),
                          ("billing", 403), ("payments-bot", 403)):  # fmt: skip
        answer = billing.client.post("/api/v1/heartbeats", json=beat(agent, f"{agent}-i"))
        assert answer.status_code == status, (agent, answer.text)
    listed = {k["id"]: k["agents"] for k in api(ruled).get("/api/v1/keys").json()["data"]}
    assert listed[billing.key_id] == ["billing-*", "refunds"]


def test_an_agent_key_cannot_take_over_another_agents_instance(
    fleet_server: KillSwitchServer, api: Any
) -> None:
    worker = api(fleet_server, scopes=("agent",), agents=["worker"])
    attacker = api(fleet_server, scopes=("agent",), agents=["attacker"])
    assert worker.client.post("/api/v1/heartbeats", json=beat("worker", "w-1")).is_success
    taken = attacker.client.post("/api/v1/heartbeats", json=beat("attacker", "w-1", 5))
    assert taken.status_code == 403 and taken.json()["field"] == "instance_id"
    agent = api(fleet_server).get("/api/v1/agents/worker").json()
    assert [i["instance_id"] for i in agent["instances"]] == ["w-1"]
    assert agent["cost_usd"] == 0


def test_an_agent_key_reports_interventions_only_for_its_agents(
    fleet_server: KillSwitchServer, api: Any
) -> None:
    admin = api(fleet_server)
    key = api(fleet_server, scopes=("agent",), agents=["email-campaign"])
    now = datetime.now(timezone.utc).isoformat()
    own = {"id": "iv-own", "action": "send_email", "target_type": "tool", "target_id": "send_email",
           "agent_id": "email-campaign", "occurred_at": now}  # fmt: skip
    other_agent = {**own, "id": "iv-2", "agent_id": "payments-bot"}
    other_target = {**own, "id": "iv-3", "target_type": "agent", "target_id": "payments-bot"}
    for i, bad in ((1, other_agent), (1, other_target)):
        field = "agent_id" if bad is other_agent else "target_id"
        sent = key.client.post("/api/v1/interventions", json={"interventions": [own, bad]})
        assert sent.status_code == 403, sent.text
        assert sent.json()["field"] == f"interventions.{i}.{field}"
    assert admin.get("/api/v1/interventions").json()["count"] == 0  # none of a refused batch
    assert key.client.post("/api/v1/interventions", json={"interventions": [own]}).is_success


def test_checkpoints_of_an_agent_key_live_in_its_agents_namespace(
    fleet_server: KillSwitchServer, api: Any
) -> None:
    victim = api(fleet_server, scopes=("agent",), agents=["payments-bot"])
    attacker = api(fleet_server, scopes=("agent",), agents=["email-campaign"])
    operator = api(fleet_server, scopes=("operator",))
    url = "/api/v1/checkpoints/payments.replica-0"
    assert victim.client.put(url, json={"state": {"next": 40}}).is_success
    assert operator.client.put(url, json={"state": "operator's"}).is_success
    written = attacker.client.put(url, json={"state": {"next": 0}})
    assert written.status_code == 200 and written.json()["state"] == {"next": 0}
    assert victim.get(url).json()["state"] == {"next": 40}, "another agent's key overwrote it"
    assert operator.get(url).json()["state"] == "operator's"
    assert attacker.get(url).json()["state"] == {"next": 0}
    # Another key of the same agent resumes from the same checkpoint.
    again = api(fleet_server, scopes=("agent",), agents=["payments-bot"])
    assert again.get(url).json()["state"] == {"next": 40}


def test_keys_without_agents_speak_for_no_agent(fleet_server: KillSwitchServer, api: Any) -> None:
    """Keys made before keys named agents (agents NULL) write for none until re-created."""
    legacy = api(fleet_server, scopes=("agent",), agents=[])
    with fleet_server.database.write() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == legacy.key_id).values(agents=None))
    fleet_server.keys.forget([legacy.key_id])  # as a fresh process would read it
    assert legacy.check("agent", "bot").status_code == 200  # checking is still fine
    # Streaming too (guards keep enforcing kills), but it keeps no instance live.
    fleet_key = api(fleet_server, scopes=("agent",), agents=["*"])
    url, store = "/api/v1/kill-switch/stream", fleet_server.store
    params = {"instance_id": "b-1", "agent_id": "bot"}
    with legacy.client.stream("GET", url, params=params) as answer:
        assert answer.status_code == 200
        lines = answer.iter_lines()
        assert "event: snapshot" in (next(lines), next(lines))
        control = {"instance_id": "c-1", "agent_id": "bot"}
        with fleet_key.client.stream("GET", url, params=control) as other:
            assert other.status_code == 200
            eventually(lambda: store.instance_agent("org_a", "c-1")[0], 10)
            assert store.instance_agent("org_a", "b-1") == (False, None)
    refused = legacy.client.post("/api/v1/heartbeats", json=beat("bot", "b-1"))
    assert refused.status_code == 403 and "re-create" in refused.json()["detail"]
    put = legacy.client.put("/api/v1/checkpoints/k", json={"state": 1})
    assert put.status_code == 403 and put.json()["field"] == "key"
    listed = {k["id"]: k["agents"] for k in api(fleet_server).get("/api/v1/keys").json()["data"]}
    assert listed[legacy.key_id] is None


def test_agents_must_be_ids_or_prefixes(fleet_server: KillSwitchServer, api: Any) -> None:
    admin = api(fleet_server)
    for bad in (["a*b"], ["**"], [""], ["x,y"]):
        answer = admin.client.post("/api/v1/keys", json={"scopes": ["agent"], "agents": bad})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"].startswith("agents"), answer.json()
    made = admin.client.post("/api/v1/keys", json={"scopes": ["agent"], "agents": ["*"]})
    assert made.status_code == 200 and made.json()["agents"] == ["*"]


# -- finding 3: forged acknowledgements -------------------------------------------------------


def test_only_the_instances_own_agent_key_acknowledges_for_it(
    fleet_server: KillSwitchServer, api: Any
) -> None:
    admin = api(fleet_server)
    worker = api(fleet_server, scopes=("agent",), agents=["worker"])
    attacker = api(fleet_server, scopes=("agent",), agents=["attacker"])
    assert worker.client.post("/api/v1/heartbeats", json=beat("worker", "w-1")).is_success
    answers: dict[str, httpx.Response] = {}

    def kill_and_wait() -> None:
        client = TestClient(fleet_server.app, headers=bearer(admin.token))  # no lifespan
        answers["kill"] = client.post(
            "/api/v1/kill-switch/kill?wait=3", json={"target_type": "agent", "target_id": "worker"}
        )

    waiting = threading.Thread(target=kill_and_wait)
    waiting.start()
    eventually(lambda: killed(admin, "worker"), 10)
    version = admin.get("/api/v1/kill-switch/state").json()["version"]
    for body, field in (
        ({"instance_id": "w-1", "version": version}, "agent_id"),
        ({"instance_id": "w-1", "version": version, "agent_id": "worker"}, "agent_id"),
        ({"instance_id": "w-1", "version": version, "agent_id": "attacker"}, "instance_id"),
    ):
        forged = attacker.client.post("/api/v1/kill-switch/ack", json=body)
        assert forged.status_code == 403, forged.text
        assert forged.json()["field"] == field
    waiting.join(15)
    assert answers["kill"].headers["X-AgentGuard-Acknowledged"] == "0/1"
    acks = admin.get("/api/v1/kill-switch/acks", target_type="agent", target_id="worker").json()
    assert [i["acknowledged"] for i in acks["instances"]] == [False]
    refused = admin.get("/api/v1/audit", action="ack.refused").json()["data"]
    assert len(refused) == 3 and all(attacker.key_id in e["actor"] for e in refused)
    assert all("'w-1'" in e["detail"] for e in refused)
    # The instance's own agent's key: counted.
    own = {"instance_id": "w-1", "version": version, "agent_id": "worker"}
    assert worker.client.post("/api/v1/kill-switch/ack", json=own).json() == {"acknowledged": 1}
    acks = admin.get("/api/v1/kill-switch/acks", target_type="agent", target_id="worker").json()
    assert (acks["acknowledged"], acks["live"]) == (1, 1)


def test_a_stream_announces_only_its_keys_agents_and_instances(
    fleet_server: KillSwitchServer, api: Any
) -> None:
    worker = api(fleet_server, scopes=("agent",), agents=["worker"])
    attacker = api(fleet_server, scopes=("agent",), agents=["attacker"])
    assert worker.client.post("/api/v1/heartbeats", json=beat("worker", "w-1")).is_success
    url = "/api/v1/kill-switch/stream"
    for params, field in (
        ({"instance_id": "w-9", "agent_id": "worker"}, "agent_id"),
        ({"instance_id": "w-1", "agent_id": "attacker"}, "instance_id"),
    ):
        with attacker.client.stream("GET", url, params=params) as answer:
            assert answer.status_code == 403
            answer.read()
            assert answer.json()["field"] == field


@pytest.fixture
def fleet_server(make_server: Any, database_url: str) -> KillSwitchServer:
    server: KillSwitchServer = make_server(database_url)
    server.start()
    return server
