"""Organization isolation, endpoint by endpoint: org A never sees or touches org B."""

from __future__ import annotations

from typing import Any

import pytest

INTERVENTION = {
    "id": "iv-b",
    "action": "send_email",
    "target_type": "agent",
    "target_id": "shared-bot",
    "occurred_at": "2026-04-18T17:00:00Z",
}


@pytest.fixture
def orgs(server: Any, api: Any) -> tuple[Any, Any]:
    """Admins of org A and org B; org B has killed ``shared-bot`` and has data everywhere."""
    a = api(server, org="org_a", owner="usr_a")
    b = api(server, org="org_b", owner="usr_b")
    assert b.kill("agent", "shared-bot", reason="org B's reason").status_code == 200
    b.client.post("/api/v1/interventions", json={"interventions": [INTERVENTION]})
    return a, b


def test_check(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    assert b.check("agent", "shared-bot").json()["is_killed"] is True
    assert a.check("agent", "shared-bot").json() == {
        "is_killed": False,
        "target_type": "agent",
        "target_id": "shared-bot",
        "reason": None,
        "killed_at": None,
    }


def test_active(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    assert a.get("/api/v1/kill-switch/active").json() == {"data": [], "count": 0}
    assert b.get("/api/v1/kill-switch/active").json()["count"] == 1


def test_kill_lands_in_the_callers_org_only(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    # A kills the same target id: no 409 from B's kill, and B's record is untouched.
    response = a.kill("agent", "shared-bot", reason="org A's reason")
    assert response.status_code == 200
    assert response.json()["organization_id"] == "org_a"
    # The body cannot choose the org.
    sneaky = a.client.post(
        "/api/v1/kill-switch/kill",
        json={"target_type": "agent", "target_id": "x", "organization_id": "org_b"},
    )
    assert sneaky.status_code == 422
    assert b.check("agent", "x").json()["is_killed"] is False
    assert b.check("agent", "shared-bot").json()["reason"] == "org B's reason"


def test_revive(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    assert a.revive("agent", "shared-bot").status_code == 404
    assert b.check("agent", "shared-bot").json()["is_killed"] is True


def test_keys(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    listed = a.get("/api/v1/keys").json()
    assert [k["id"] for k in listed["data"]] == [a.key_id]
    assert a.client.delete(f"/api/v1/keys/{b.key_id}").status_code == 404
    assert b.get("/api/v1/keys").status_code == 200  # B's key still works


def test_audit(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    entries = a.get("/api/v1/audit").json()["data"]
    assert {e["organization_id"] for e in entries} == {"org_a"}
    assert not any(e["target_id"] == "shared-bot" for e in entries)
    assert any(e["target_id"] == "shared-bot" for e in b.get("/api/v1/audit").json()["data"])


def test_interventions(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    assert a.get("/api/v1/interventions").json() == {"data": [], "count": 0}
    assert a.get("/api/v1/interventions/counts").json() == {"data": [], "count": 0}
    # The same intervention id in org A is a new intervention of org A.
    sent = a.client.post("/api/v1/interventions", json={"interventions": [INTERVENTION]})
    assert sent.json() == {"received": 1, "created": 1}
    assert b.get("/api/v1/interventions").json()["count"] == 1


def test_a_hard_block_cannot_borrow_another_orgs_killer(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    b_kill = b.get("/api/v1/kill-switch/active").json()["data"][0]
    item = {**INTERVENTION, "id": "iv-a", "kill_switch_id": b_kill["id"]}
    a.client.post("/api/v1/interventions", json={"interventions": [item]})
    stored = a.get("/api/v1/interventions").json()["data"][0]
    assert stored["kill_switch_id"] == b_kill["id"]
    assert stored["killed_by"] is None  # not filled in from org B's record


def test_fleet_endpoints(orgs: tuple[Any, Any]) -> None:
    a, b = orgs
    beat = {
        "instance_id": "shared-instance",
        "agent_id": "shared-bot",
        "interval": 10,
        "executed": 5,
        "refused": 1,
        "failed": 0,
        "cost_usd": 2.5,
        "version": 1,  # org B's version, after its kill
    }
    assert b.client.post("/api/v1/heartbeats", json=beat).json()["killed"] is True
    b.client.put("/api/v1/checkpoints/shared", json={"state": "org B's"})
    # A sees none of B's fleet.
    assert a.get("/api/v1/agents").json() == {"data": [], "count": 0}
    assert a.get("/api/v1/agents/shared-bot").status_code == 404
    acks = {"target_type": "agent", "target_id": "shared-bot"}
    assert a.get("/api/v1/kill-switch/acks", **acks).status_code == 404
    assert a.get("/api/v1/checkpoints/shared").status_code == 404
    # B's version means nothing in A (whose version is 0), and B's kill does not reach A.
    assert a.client.post("/api/v1/heartbeats", json=beat).status_code == 409
    mine = a.client.post("/api/v1/heartbeats", json={**beat, "version": 0}).json()
    assert (mine["killed"], mine["snapshot"]) == (False, None)
    ack = {"instance_id": "shared-instance", "version": 0}
    assert a.client.post("/api/v1/kill-switch/ack", json=ack).json() == {"acknowledged": 0}
    # A's kill waits for A's instance only, and B's acknowledgement stays B's.
    killed = a.client.post(
        "/api/v1/kill-switch/kill", params={"wait": 0}, json={**acks, "reason": "A's"}
    )
    assert killed.headers["x-agentguard-acknowledged"] == "0/1"
    b_acks = b.get("/api/v1/kill-switch/acks", **acks).json()
    assert (b_acks["live"], b_acks["acknowledged"]) == (1, 1)
    a.client.put("/api/v1/checkpoints/shared", json={"state": "org A's"})
    assert b.get("/api/v1/checkpoints/shared").json()["state"] == "org B's"
    b_agent = b.get("/api/v1/agents/shared-bot").json()
    assert (b_agent["executed"], b_agent["cost_usd"]) == (5, 2.5)
    assert [i["version"] for i in b_agent["instances"]] == [1]
