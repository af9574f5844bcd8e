"""The AgentSentinel SDK's own formats, in process: its intervention records and its ledger,
mapped onto our interventions, usage and fleet, bound like every report. On SQLite and
PostgreSQL. (tests/server/test_agentsentinel_sdk.py drives the real SDK against
``agentguard serve``.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, select

from agentguard import BudgetRule, ErrorRateRule
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import instances, ledger_entries, usage

INTERVENTIONS = "/api/v1/interventions"
INGEST = "/api/v1/ingest"


def now(offset: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset)).isoformat()


def record(**fields: Any) -> dict[str, Any]:
    """An intervention record as the SDK's ``InterventionRecord.to_dict()`` writes it."""
    return {
        "intervention_type": "hard_block",
        "outcome": "blocked",
        "action_name": "wire_funds",
        "action_description": None,
        "agent_id": "sdk-bot",
        "run_id": "run-1",
        "task_id": None,
        "mission_id": None,
        "policy_name": None,
        "estimated_cost": 2,
        "actual_cost": 0.0,
        "risk_level": "high",
        "blast_radius": {"funds_protected": 2},
        "reason": "Action 'wire_funds' is on the denied list",
        "agent_intent": None,
        "original_inputs": {"args": [1], "kwargs": {}},
        "modified_inputs": None,
        "context": {},
        "remediation_payload": {"reason_code": "DENIED_ACTION"},
        "timestamp": now(),
        **fields,
    }


def entry(n: int, outcome: str = "success", cost: float = 0.25, **fields: Any) -> dict[str, Any]:
    """A ledger entry as the SDK's ``Ledger.record`` writes it."""
    return {
        "id": f"entry-{n}",
        "timestamp": now(),
        "action": "send_email",
        "cost_usd": cost,
        "duration_ms": 3.2,
        "outcome": outcome,
        "tags": [],
        "payload": {"inputs": {"args": ["a@example.com"], "kwargs": {}}, "outputs": "sent"},
        "impact": "medium",
        **fields,
    }


def rows(server: KillSwitchServer, table: Table) -> list[Any]:
    with server.database.read() as conn:
        return list(conn.execute(select(table)).all())


def batch(*entries: dict[str, Any], run_id: str = "run-1", **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "entries": list(entries), **fields}


@pytest.fixture
def sdk_key(server: KillSwitchServer, api: Any) -> Any:
    """What the SDK holds: an agent key bound to its agent."""
    return api(server, scopes=("agent",), agents=["sdk-bot"])


def test_what_it_sends_that_agentguard_does_not_serve_is_a_404(
    server: KillSwitchServer, api: Any
) -> None:
    """Its policies, approvals, budget reservations and replay stay with the SDK (README)."""
    admin = api(server)
    for method, path in (
        ("GET", "/api/v1/policies/sync"),
        ("POST", "/api/v1/approvals"),
        ("POST", "/api/v1/approvals/check"),
        ("POST", "/api/v1/budgets/reserve"),
        ("GET", "/api/v1/replay/run-1/bundle"),
    ):
        answer = admin.client.request(method, path, json={} if method == "POST" else None)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found", path


# -- interventions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "stored"),
    [
        ("blocked", "HARD_BLOCK"),
        ("escalated", "HARD_BLOCK"),
        ("rejected_after_review", "HARD_BLOCK"),
        ("approved_after_review", "OBSERVED"),
        ("modified", "OBSERVED"),
        ("warned", "OBSERVED"),
    ],
)
def test_an_intervention_record_becomes_ours(
    server: KillSwitchServer, api: Any, sdk_key: Any, outcome: str, stored: str
) -> None:
    """A refused call is a HARD_BLOCK of the tool; a call that ran anyway is OBSERVED."""
    sent = record(outcome=outcome, intervention_type="budget_exceeded", policy_name="run-budget",
                  reason="Run budget exceeded: 1.2000 > 1.0000 USD", mission_id="m-1")  # fmt: skip
    answer = sdk_key.client.post(f"{INTERVENTIONS}/", json=sent)
    assert answer.status_code == 201, answer.text
    assert answer.json()["type"] == stored and answer.json()["created"] is True
    (iv,) = api(server).get(INTERVENTIONS).json()["data"]
    assert iv == {
        "id": answer.json()["id"],
        "type": stored,
        "action": "wire_funds",
        "target_type": "tool",
        "target_id": "wire_funds",
        "kill_switch_id": None,
        "killed_by": None,
        "reason": f"AgentSentinel budget_exceeded ({outcome}), policy run-budget: "
        "Run budget exceeded: 1.2000 > 1.0000 USD",
        "agent_id": "sdk-bot",
        "run_id": "run-1",
        "mission_id": "m-1",
        "instance_id": "agentsentinel:sdk-bot:run-1",
        "tool_call_id": None,
        "model": None,
        "ran_for_ms": None,
        "occurred_at": iv["occurred_at"],
    }
    sent_at = datetime.fromisoformat(sent["timestamp"])
    assert datetime.fromisoformat(iv["occurred_at"].replace("Z", "+00:00")) == sent_at


def test_a_record_sent_again_is_stored_once(
    server: KillSwitchServer, sdk_key: Any, api: Any
) -> None:
    """The SDK re-sends a batch's records after a failure part-way: each is stored once."""
    sent = record()
    first = sdk_key.client.post(f"{INTERVENTIONS}/", json=sent).json()
    again = sdk_key.client.post(f"{INTERVENTIONS}/", json=sent).json()
    assert (first["created"], again["created"]) == (True, False) and first["id"] == again["id"]
    other = sdk_key.client.post(f"{INTERVENTIONS}/", json={**sent, "timestamp": now(1)}).json()
    assert other["created"] is True
    assert api(server).get(INTERVENTIONS).json()["count"] == 2


def test_identity_comes_from_the_headers_when_the_record_has_none(
    server: KillSwitchServer, sdk_key: Any, api: Any
) -> None:
    headers = {"X-Sentinel-Agent-Id": "sdk-bot", "X-Sentinel-Run-Id": "run-9",
               "X-Sentinel-Harness": "langchain", "X-Sentinel-Principal": "usr_42"}  # fmt: skip
    sent = record(agent_id=None, run_id=None)
    assert sdk_key.client.post(f"{INTERVENTIONS}/", json=sent, headers=headers).is_success
    (iv,) = api(server).get(INTERVENTIONS).json()["data"]
    assert (iv["agent_id"], iv["run_id"]) == ("sdk-bot", "run-9")
    assert iv["instance_id"] == "agentsentinel:sdk-bot:run-9"
    # The record's own ids win over the headers'.
    sent = record(agent_id="sdk-bot", run_id="run-own", timestamp=now(1))
    assert sdk_key.client.post(f"{INTERVENTIONS}/", json=sent, headers=headers).is_success
    newest = api(server).get(INTERVENTIONS).json()["data"][0]
    assert newest["run_id"] == "run-own"


def test_a_long_reason_is_kept_to_2000_characters(server: KillSwitchServer, api: Any) -> None:
    admin = api(server)
    answer = admin.client.post(f"{INTERVENTIONS}/", json=record(reason="x" * 5000))
    assert answer.status_code == 201
    (iv,) = admin.get(INTERVENTIONS).json()["data"]
    assert len(iv["reason"]) == 2000 and iv["reason"].endswith("x…")


def test_bad_records_name_the_field_and_store_nothing(server: KillSwitchServer, api: Any) -> None:
    admin = api(server)
    for bad, field in (
        (record(outcome="maybe"), "outcome"),
        (record(timestamp="2099-01-01T00:00:00Z"), "timestamp"),
        (record(estimated_cost=-1), "estimated_cost"),
        (record(action_name="wire\u200bfunds"), "action_name"),
        ({**record(), "surprise": 1}, "surprise"),
    ):
        answer = admin.client.post(f"{INTERVENTIONS}/", json=bad)
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    twice = admin.client.post(
        f"{INTERVENTIONS}/",
        json=record(),
        headers=[("X-Sentinel-Agent-Id", "sdk-bot"), ("X-Sentinel-Agent-Id", "other")],
    )
    assert twice.status_code == 422 and twice.json()["field"] == "X-Sentinel-Agent-Id"
    accented = admin.client.post(
        f"{INTERVENTIONS}/",
        json=record(),
        headers={"X-Sentinel-Run-Id": "caf\xe9".encode("latin-1")},
    )
    assert accented.status_code == 422 and accented.json()["field"] == "X-Sentinel-Run-Id"
    assert admin.get(INTERVENTIONS).json()["count"] == 0


def test_records_never_feed_server_rules(make_server: Any, database_url: str, api: Any) -> None:
    """An intervention's costs are what it says, not what the server derived: rules ignore them."""
    server = make_server(database_url, rules=[BudgetRule("budget", limit_usd=1, window=3600)])
    key = api(server, scopes=("agent",), agents=["sdk-bot"])
    sent = record(estimated_cost=1e6, actual_cost=1e6, outcome="approved_after_review")
    assert key.client.post(f"{INTERVENTIONS}/", json=sent).is_success
    assert api(server).check("agent", "sdk-bot").json()["is_killed"] is False


# -- the ledger ---------------------------------------------------------------------------------


def test_ledger_entries_count_as_usage_of_their_agent(
    server: KillSwitchServer, sdk_key: Any, api: Any
) -> None:
    entries = [
        entry(1, "success", 0.5),
        entry(2, "success", 0.25),
        entry(3, "error", 1.0),  # ran and failed: spent
        entry(4, "blocked", 2.0),  # refused by the SDK's policy: not spent
        entry(5, "rejected", 3.0),
        entry(6, "replayed", 4.0),  # the body did not run
        entry(7, "idempotent_replay", 5.0),
    ]
    answer = sdk_key.client.post(INGEST, json=batch(*entries, agent_id="sdk-bot"))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"received": 7, "created": 7, "unattributed": 0}
    agent = api(server).get("/api/v1/agents/sdk-bot").json()
    totals = (agent["executed"], agent["refused"], agent["failed"], agent["cost_usd"])
    assert totals == (3, 2, 1, 1.75)
    assert agent["cost_usd_today"] == 1.75 and agent["health"] == "active"
    (instance,) = agent["instances"]
    assert instance["instance_id"] == "agentsentinel:sdk-bot:run-1"
    assert (instance["run_id"], instance["status"], instance["health"]) == (
        "run-1",
        "running",
        "active",
    )


def test_a_batch_sent_again_counts_once(server: KillSwitchServer, sdk_key: Any, api: Any) -> None:
    """The SDK re-sends every run's entries when a later run's batch failed: counted once."""
    first = batch(entry(1, cost=1.0), entry(2, cost=1.0), entry(1, cost=1.0), agent_id="sdk-bot")
    assert sdk_key.client.post(INGEST, json=first).json() == {
        "received": 3,
        "created": 2,  # entry-1 twice in one batch: once
        "unattributed": 0,
    }
    again = batch(entry(1, cost=1.0), entry(2, cost=1.0), entry(3, cost=1.0), agent_id="sdk-bot")
    assert sdk_key.client.post(INGEST, json=again).json()["created"] == 1
    agent = api(server).get("/api/v1/agents/sdk-bot").json()
    assert (agent["executed"], agent["cost_usd"]) == (3, 3.0)


def test_each_agent_and_run_is_an_instance(server: KillSwitchServer, api: Any) -> None:
    """An entry's agent wins over the batch's, the batch's over the header's."""
    key = api(server, scopes=("agent",), agents=["planner", "writer", "editor"])
    sent = batch(
        entry(1, cost=1.0),
        entry(2, cost=2.0, agent_id="writer"),
        entry(3, cost=4.0, agent_id="writer", run_id="run-2"),
        agent_id="planner",
        mission_id="launch",
    )
    assert key.client.post(INGEST, json=sent).is_success
    header_only = batch(entry(4, cost=8.0), run_id="run-3")
    answer = key.client.post(INGEST, json=header_only, headers={"X-Sentinel-Agent-Id": "editor"})
    assert answer.is_success
    agents = {a["agent_id"]: a for a in api(server).get("/api/v1/agents").json()["data"]}
    assert {k: a["cost_usd"] for k, a in agents.items()} == {
        "editor": 8.0,
        "planner": 1.0,
        "writer": 6.0,
    }
    writer = {i["run_id"]: i for i in agents["writer"]["instances"]}
    assert {r: i["cost_usd"] for r, i in writer.items()} == {"run-1": 2.0, "run-2": 4.0}
    assert writer["run-1"]["mission_id"] == "launch"
    assert agents["editor"]["instances"][0]["instance_id"] == "agentsentinel:editor:run-3"


def test_entries_naming_no_agent_are_remembered_but_counted_nowhere(
    server: KillSwitchServer, api: Any
) -> None:
    admin = api(server)  # an operator or admin key speaks for every agent, and for none
    answer = admin.client.post(INGEST, json=batch(entry(1), entry(2)))
    assert answer.json() == {"received": 2, "created": 2, "unattributed": 2}
    assert admin.get("/api/v1/agents").json()["count"] == 0
    again = admin.client.post(INGEST, json=batch(entry(1), entry(2)))
    assert again.json() == {"received": 2, "created": 0, "unattributed": 0}
    # An agent key must name its agent.
    key = api(server, scopes=("agent",), agents=["sdk-bot"])
    refused = key.client.post(INGEST, json=batch(entry(3)))
    assert refused.status_code == 403 and refused.json()["field"] == "agent_id"


def test_a_batch_is_all_or_nothing(server: KillSwitchServer, sdk_key: Any) -> None:
    """One bad entry, or one entry for another agent, and no entry of the batch counts."""
    good = [entry(n) for n in range(5)]
    for k, bad, status, field in (
        (0, {"outcome": "maybe"}, 422, "entries.0.outcome"),
        (4, {"timestamp": "soon"}, 422, "entries.4.timestamp"),
        (2, {"cost_usd": -1}, 422, "entries.2.cost_usd"),
        (3, {"agent_id": "payments-bot"}, 403, "entries.3.agent_id"),
    ):
        broken = [*good[:k], {**good[k], **bad}, *good[k + 1 :]]
        answer = sdk_key.client.post(INGEST, json=batch(*broken, agent_id="sdk-bot"))
        assert answer.status_code == status and answer.json()["field"] == field, answer.text
        for table in (ledger_entries, instances, usage):
            assert rows(server, table) == [], table.name
    assert sdk_key.client.get("/api/v1/agents").status_code == 403  # an agent key cannot read
    answer = sdk_key.client.post(INGEST, json=batch(*good, agent_id="sdk-bot"))
    assert answer.json()["created"] == 5  # the same entries, all good: every one counts


def test_a_server_budget_rule_trips_on_ledger_spend(
    make_server: Any, database_url: str, api: Any
) -> None:
    server = make_server(database_url, rules=[BudgetRule("budget", limit_usd=1, window=3600)])
    key = api(server, scopes=("agent",), agents=["sdk-bot"])
    admin = api(server)
    assert key.client.post(INGEST, json=batch(entry(1, cost=0.6), agent_id="sdk-bot")).is_success
    assert admin.check("agent", "sdk-bot").json()["is_killed"] is False
    # Spend the SDK's own policy refused is no spend.
    refused = batch(entry(2, "blocked", cost=50), agent_id="sdk-bot")
    assert key.client.post(INGEST, json=refused).is_success
    assert admin.check("agent", "sdk-bot").json()["is_killed"] is False
    assert key.client.post(INGEST, json=batch(entry(3, cost=0.6), agent_id="sdk-bot")).is_success
    check = admin.check("agent", "sdk-bot").json()
    assert check["is_killed"] is True and "spent $1.20" in check["reason"]
    (kill,) = admin.get("/api/v1/audit", action="kill").json()["data"]
    assert kill["actor"] == "rule:budget"
    assert "AgentSentinel ledger of instance 'agentsentinel:sdk-bot:run-1'" in kill["detail"]
    assert key.key_id in kill["detail"]


def test_an_error_rate_rule_trips_on_ledger_failures(
    make_server: Any, database_url: str, api: Any
) -> None:
    rule = ErrorRateRule("errors", max_rate=0.5, min_calls=4, window=300)
    server = make_server(database_url, rules=[rule])
    key = api(server, scopes=("agent",), agents=["sdk-bot"])
    sent = batch(*(entry(n, "error" if n % 4 else "success") for n in range(4)), agent_id="sdk-bot")
    assert key.client.post(INGEST, json=sent).is_success
    assert api(server).check("agent", "sdk-bot").json()["is_killed"] is True


def test_its_instances_cannot_acknowledge_a_kill(
    server: KillSwitchServer, sdk_key: Any, api: Any
) -> None:
    """The SDK has no way to say it applied a kill: its live instance counts as not yet."""
    admin = api(server)
    assert sdk_key.client.post(INGEST, json=batch(entry(1), agent_id="sdk-bot")).is_success
    assert admin.kill("agent", "sdk-bot").status_code == 200
    acks = admin.get("/api/v1/kill-switch/acks", target_type="agent", target_id="sdk-bot").json()
    assert (acks["live"], acks["acknowledged"]) == (1, 0)
    assert acks["instances"][0]["instance_id"] == "agentsentinel:sdk-bot:run-1"
    agent = admin.get("/api/v1/agents/sdk-bot").json()
    assert agent["health"] == "killed" and agent["instances"][0]["health"] == "killed"
