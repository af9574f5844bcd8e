"""Selector kills over the API: normalised ids (409 for the same selector however written),
labels in heartbeats and the agents API, and which instances a selector kill waits on."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import Guard, PolicyViolationError


def beat(agent: Any, instance: str, agent_id: str, **extra: Any) -> Any:
    body = {"instance_id": instance, "agent_id": agent_id, "interval": 60, "executed": 0,
            "refused": 0, "failed": 0, "cost_usd": 0.0, "version": 0, **extra}  # fmt: skip
    return agent.client.post("/api/v1/heartbeats", json=body)


def test_a_selector_kill_is_normalised_and_one_per_selector(server: Any, api: Any) -> None:
    a = api(server)
    record = a.kill("selector", "team=growth , env=prod", reason="prod growth").json()
    assert record["target_type"] == "selector" and record["target_id"] == "env=prod,team=growth"
    again = a.kill("selector", "env=prod,team=growth")
    assert again.status_code == 409 and again.json()["kill_switch"]["id"] == record["id"]
    check = a.check("selector", "team=growth,env=prod").json()
    assert check["is_killed"] is True and check["target_id"] == "env=prod,team=growth"
    bad = a.kill("selector", "env!=prod")
    assert bad.status_code == 422 and bad.json()["field"] == "target_id"
    assert a.revive("selector", "team=growth,env=prod").status_code == 200


def test_guards_with_matching_labels_refuse(server: Any, api: Any) -> None:
    a = api(server)
    prod = Guard(server, organization_id="org_a", labels={"env": "prod"}, agent_id="mailer")
    dev = Guard(server, organization_id="org_a", labels={"env": "dev"}, agent_id="mailer")
    send = prod.guarded_action(name="send_email")(lambda: "sent")
    send_dev = dev.guarded_action(name="send_email")(lambda: "sent")
    assert a.kill("selector", "env=prod,tool=send_email").status_code == 200
    with pytest.raises(PolicyViolationError):
        send()
    assert send_dev() == "sent"
    prod.close()
    dev.close()


def test_labels_in_heartbeats_and_the_agents_api(server: Any, api: Any) -> None:
    a = api(server)
    agent = api(server, scopes=("agent",))
    assert (
        beat(agent, "i-prod", "mailer", labels={"env": "prod", "team": "growth"}).status_code == 200
    )
    assert beat(agent, "i-dev", "mailer", labels={"env": "dev"}).status_code == 200
    assert beat(agent, "i-other", "billing", labels={"env": "prod"}).status_code == 200
    (billing, mailer) = a.get("/api/v1/agents").json()["data"]
    assert {i["instance_id"]: i["labels"] for i in mailer["instances"]} == {
        "i-dev": {"env": "dev"},
        "i-prod": {"env": "prod", "team": "growth"},
    }
    bad = beat(agent, "i-bad", "mailer", labels={"bad key": "x"})
    assert bad.status_code == 422 and bad.json()["field"] == "labels.bad key.[key]"
    # A selector kill waits on the live instances it selects: labels and agent match.
    a.kill("selector", "env=prod,agent=mailer")
    acks = a.get(
        "/api/v1/kill-switch/acks", target_type="selector", target_id="agent=mailer,env=prod"
    )
    assert acks.status_code == 200, acks.text
    assert [i["instance_id"] for i in acks.json()["instances"]] == ["i-prod"]
    mailer = a.get("/api/v1/agents/mailer").json()
    health = {i["instance_id"]: i["health"] for i in mailer["instances"]}
    assert health == {"i-dev": "active", "i-prod": "killed"}
