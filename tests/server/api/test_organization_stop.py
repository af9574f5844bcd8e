"""The organization-wide stop: target type ``organization`` over the API, who may use it, and
what it refuses (every guarded call of the organization, no other organization's)."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import Guard, PolicyViolationError


def stop(a: Any, org: str | None = None, **body: Any) -> Any:
    return a.kill("organization", org or a.org, **body)


def resume(a: Any, org: str | None = None) -> Any:
    return a.revive("organization", org or a.org)


def test_an_admin_stops_and_resumes_every_guarded_call(server: Any, api: Any) -> None:
    admin = api(server)
    other = api(server, org="org_b")
    guard = Guard(server, organization_id="org_a", agent_id="mailer")
    their_guard = Guard(server, organization_id="org_b", agent_id="mailer")

    @guard.guarded_action
    def send() -> str:
        return "sent"

    @their_guard.guarded_action
    def their_send() -> str:
        return "sent"

    response = stop(admin, reason="incident 42")
    assert response.status_code == 200, response.text
    record = response.json()
    assert (record["target_type"], record["target_id"]) == ("organization", "org_a")
    check = admin.check("organization", "org_a").json()
    assert check["is_killed"] is True and check["reason"] == "incident 42"
    with pytest.raises(PolicyViolationError) as refused:
        send()
    assert (refused.value.target_type, refused.value.target_id) == ("organization", "org_a")
    assert their_send() == "sent"  # another organization runs on
    assert other.check("organization", "org_b").json()["is_killed"] is False
    assert stop(admin).status_code == 409
    audit = admin.get("/api/v1/audit", target_type="organization").json()["data"]
    assert [(e["action"], e["target_id"]) for e in audit] == [("kill", "org_a")]
    assert resume(admin).status_code == 200
    assert send() == "sent"
    assert resume(admin).status_code == 404
    guard.close()
    their_guard.close()


def test_an_agent_of_a_stopped_organization_shows_killed(server: Any, api: Any) -> None:
    admin = api(server)
    agent = api(server, scopes=("agent",))
    beat = {"instance_id": "i-1", "agent_id": "mailer", "interval": 60, "executed": 0,
            "refused": 0, "failed": 0, "cost_usd": 0.0, "version": 0}  # fmt: skip
    assert agent.client.post("/api/v1/heartbeats", json=beat).status_code == 200
    assert stop(admin).status_code == 200
    (row,) = admin.get("/api/v1/agents").json()["data"]
    assert row["agent_id"] == "mailer" and row["health"] == "killed"


@pytest.mark.parametrize("scopes", [("operator",), ("read",), ("agent",)])
def test_only_admin_may_stop_or_resume_the_organization(
    server: Any, api: Any, scopes: tuple[str, ...]
) -> None:
    caller = api(server, scopes=scopes)
    refused = stop(caller)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    if scopes == ("operator",):
        assert "'admin'" in refused.json()["detail"]
        assert "--operators-can-stop-all" in refused.json()["detail"]
    assert stop(api(server)).status_code == 200  # an admin's
    assert resume(caller).status_code == 403
    assert caller.check("organization", "org_a").json()["is_killed"] is True


def test_operators_may_when_the_server_allows_it(
    make_server: Any, database_url: str, api: Any
) -> None:
    server = make_server(database_url, operators_can_stop_all=True)
    server.start()
    operator = api(server, scopes=("operator",))
    assert stop(operator, reason="all hands").status_code == 200
    assert resume(operator).status_code == 200
    assert stop(api(server, scopes=("read",))).status_code == 403


def test_no_one_stops_another_organization(server: Any, api: Any) -> None:
    admin = api(server)
    response = stop(admin, "org_b")
    assert response.status_code == 422
    assert response.json()["field"] == "target_id"
    assert "'org_a'" in response.json()["detail"]
    assert api(server, org="org_b").check("organization", "org_b").json()["is_killed"] is False
