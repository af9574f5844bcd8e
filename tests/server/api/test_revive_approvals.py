"""Governed revive over the API, on SQLite and PostgreSQL: a revive that the server's approval
rules match becomes a request (202) that other people approve; the last approval revives the
kill like any revive. Refusals: the requester, the same person with another key, a read key,
an agent key, another organization. Requests expire; everything is audited."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentguard.errors import InvalidInputError
from agentguard.server import KillSwitchServer
from agentguard.server.approvals import ReviveApprovals, parse_rule
from support import eventually

REQUESTS = "/api/v1/kill-switch/revive-requests"


@pytest.fixture
def governed(make_server: Any, database_url: str) -> KillSwitchServer:
    """A server where every revive needs 2 people."""
    s: KillSwitchServer = make_server(database_url, revive_approvals="2")
    s.start()
    return s


def _audit(a: Any, action: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = a.get("/api/v1/audit", action=action).json()["data"]
    return data


def test_without_rules_a_revive_answers_200_as_ever(server: Any, api: Any) -> None:
    a = api(server)
    a.kill("agent", "bot")
    response = a.revive("agent", "bot")
    assert response.status_code == 200
    assert response.json()["revived_by"] == a.actor
    assert a.get(REQUESTS).json() == {"data": [], "count": 0}


def test_a_revive_becomes_a_request_and_another_person_approves_it(
    governed: KillSwitchServer, api: Any
) -> None:
    alice = api(governed, owner="alice", scopes=("operator",))
    bob = api(governed, owner="bob", scopes=("operator",))
    alice.kill("agent", "payments", reason="drained")
    asked = alice.revive("agent", "payments", reason="fixed the loop")
    assert asked.status_code == 202, asked.text
    request = asked.json()
    assert request["status"] == "pending"
    assert request["people_required"] == 2
    assert request["requested_by"] == alice.actor
    assert request["reason"] == "fixed the loop"
    assert request["approvals"] == []
    assert "kill_switch" not in request
    # The kill holds while the request waits.
    assert alice.check("agent", "payments").json()["is_killed"] is True
    listed = bob.get(REQUESTS).json()
    assert [r["id"] for r in listed["data"]] == [request["id"]] and listed["count"] == 1

    approved = bob.approve(request["id"], reason="looked at it")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["closed_by"] == bob.actor
    assert [a["approved_by"] for a in body["approvals"]] == [bob.actor]
    assert body["kill_switch"]["is_active"] is False
    assert body["kill_switch"]["revived_by"] == alice.actor  # the requester's revive
    assert int(approved.headers["X-AgentGuard-Version"]) >= 2
    assert alice.check("agent", "payments").json()["is_killed"] is False
    assert bob.get(REQUESTS).json()["count"] == 0  # none pending
    assert bob.get(REQUESTS, status="approved").json()["count"] == 1

    # Audited: the request, the approval, and the revive crediting both people.
    assert _audit(alice, "revive.request")[0]["actor"] == alice.actor
    assert _audit(alice, "revive.approve")[0]["actor"] == bob.actor
    revive = _audit(alice, "revive")[0]
    assert revive["actor"] == alice.actor
    assert f"approved by {bob.actor}" in revive["detail"]
    assert request["id"] in revive["detail"]


def test_the_revive_reaches_the_index_like_any_revive(governed: KillSwitchServer, api: Any) -> None:
    alice = api(governed, owner="alice")
    bob = api(governed, owner="bob")
    alice.kill("agent", "bot")
    index = governed.index("org_a")
    assert index.get("agent", "bot") is not None
    rid = alice.revive("agent", "bot").json()["id"]
    assert index.get("agent", "bot") is not None
    bob.approve(rid)
    eventually(lambda: index.get("agent", "bot") is None)


def test_the_requester_cannot_approve_even_with_another_key(
    governed: KillSwitchServer, api: Any
) -> None:
    alice = api(governed, owner="alice")
    alice_again = api(governed, owner="alice", scopes=("operator",))
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    for same_person in (alice, alice_again):
        refused = same_person.approve(rid)
        assert refused.status_code == 403
        assert "yourself" in refused.json()["detail"]
        assert "another person" in refused.json()["detail"]
    assert alice.check("agent", "bot").json()["is_killed"] is True
    assert _audit(alice, "revive.approve") == []


def test_read_and_agent_keys_cannot_approve_or_reject(governed: KillSwitchServer, api: Any) -> None:
    alice = api(governed, owner="alice")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    reader = api(governed, owner="rita", scopes=("read",))
    agent = api(governed, owner="bot", scopes=("agent",), agents=["bot"])
    for key in (reader, agent):
        assert key.approve(rid).status_code == 403
        assert key.reject(rid).status_code == 403
        assert key.revive("agent", "bot").status_code == 403
    assert reader.get(REQUESTS).json()["count"] == 1  # a read key may look
    assert agent.get(REQUESTS).status_code == 403
    assert alice.check("agent", "bot").json()["is_killed"] is True


def test_another_organizations_request_is_not_found(governed: KillSwitchServer, api: Any) -> None:
    alice = api(governed, owner="alice")
    outsider = api(governed, org="org_b", owner="bob")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    assert outsider.approve(rid).status_code == 404
    assert outsider.reject(rid).status_code == 404
    assert outsider.get(REQUESTS, status="all").json()["count"] == 0
    assert alice.get(REQUESTS).json()["data"][0]["status"] == "pending"


def test_three_people_two_approvers(make_server: Any, database_url: str, api: Any) -> None:
    server = make_server(database_url, revive_approvals="3")
    server.start()
    alice, bob, carol = (api(server, owner=o) for o in ("alice", "bob", "carol"))
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    first = bob.approve(rid).json()
    assert first["status"] == "pending" and "kill_switch" not in first
    again = bob.approve(rid)
    assert again.status_code == 403 and "already" in again.json()["detail"]
    assert alice.check("agent", "bot").json()["is_killed"] is True
    last = carol.approve(rid).json()
    assert last["status"] == "approved"
    assert [a["approved_by"] for a in last["approvals"]] == [bob.actor, carol.actor]
    assert alice.check("agent", "bot").json()["is_killed"] is False


def test_rules_by_target_pattern_and_organization(
    make_server: Any, database_url: str, api: Any
) -> None:
    server = make_server(database_url, revive_approvals=["agent:payments*=2", "org_b/*=2"])
    server.start()
    a = api(server)
    for target in ("payments", "payments-eu", "mailer"):
        a.kill("agent", target)
    assert a.revive("agent", "payments-eu").status_code == 202
    assert a.revive("agent", "mailer").status_code == 200  # no rule matches it
    b = api(server, org="org_b")
    b.kill("tool", "send_email")
    assert b.revive("tool", "send_email").status_code == 202


def test_one_pending_request_per_target_and_404_without_a_kill(
    governed: KillSwitchServer, api: Any
) -> None:
    alice = api(governed, owner="alice")
    bob = api(governed, owner="bob")
    assert alice.revive("agent", "never-killed").status_code == 404
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    twice = bob.revive("agent", "bot")
    assert twice.status_code == 409 and rid in twice.json()["detail"]


def test_reject_and_withdraw(governed: KillSwitchServer, api: Any) -> None:
    alice = api(governed, owner="alice")
    bob = api(governed, owner="bob")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    rejected = bob.reject(rid, reason="not yet")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["close_reason"] == "not yet"
    assert bob.approve(rid).status_code == 409  # closed
    assert alice.check("agent", "bot").json()["is_killed"] is True
    assert "not yet" in _audit(alice, "revive.reject")[0]["detail"]
    # The requester may withdraw their own request, then ask again.
    again = alice.revive("agent", "bot").json()["id"]
    assert alice.reject(again).json()["status"] == "rejected"


def test_requests_expire(make_server: Any, database_url: str, api: Any) -> None:
    server = make_server(
        database_url,
        revive_approvals=ReviveApprovals.parse("2", ttl=timedelta(seconds=1)),
        expiry_interval=0.2,
    )
    server.start()
    alice, bob = api(server, owner="alice"), api(server, owner="bob")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    eventually(lambda: alice.get(REQUESTS, status="expired").json()["count"] == 1, timeout=10)
    late = bob.approve(rid)
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert alice.check("agent", "bot").json()["is_killed"] is True
    expired = _audit(alice, "revive.expire")
    assert [e["actor"] for e in expired] == ["expiry"] and rid in expired[0]["detail"]


def test_an_approval_after_its_time_expires_it(governed: KillSwitchServer, api: Any) -> None:
    """Without waiting for the expiry loop: the approval finds the time passed."""
    alice, bob = api(governed, owner="alice"), api(governed, owner="bob")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert governed.store.expire_revive_requests(later) == 1
    assert bob.approve(rid).status_code == 409
    assert alice.check("agent", "bot").json()["is_killed"] is True


def test_a_kill_revived_meanwhile_supersedes_the_request(
    governed: KillSwitchServer, api: Any
) -> None:
    alice, bob = api(governed, owner="alice"), api(governed, owner="bob")
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    governed.store.revive("org_a", "agent", "bot", actor="in-process")
    answer = bob.approve(rid)
    assert answer.status_code == 409 and "superseded" in answer.json()["detail"]
    assert alice.get(REQUESTS, status="superseded").json()["count"] == 1


def test_require_reason_applies_to_revives_and_approvals(
    make_server: Any, database_url: str, api: Any
) -> None:
    plain = make_server(database_url, require_reason=True)
    plain.start()
    a = api(plain)
    a.kill("agent", "bot", reason="why")
    refused = a.revive("agent", "bot")
    assert refused.status_code == 422 and refused.json()["field"] == "reason"
    assert "revives" in refused.json()["detail"]
    assert a.revive("agent", "bot", reason="fixed").status_code == 200
    assert _audit(a, "revive")[0]["detail"] == "fixed"


def test_require_reason_on_a_governed_server(make_server: Any, api: Any, tmp_path: Any) -> None:
    server = make_server(f"sqlite:///{tmp_path}/g.db", require_reason=True, revive_approvals="2")
    server.start()
    alice, bob = api(server, owner="alice"), api(server, owner="bob")
    alice.kill("agent", "bot", reason="why")
    assert alice.revive("agent", "bot").status_code == 422
    rid = alice.revive("agent", "bot", reason="fixed").json()["id"]
    refused = bob.approve(rid)
    assert refused.status_code == 422 and "approvals" in refused.json()["detail"]
    assert bob.reject(rid).status_code == 422
    assert bob.approve(rid, reason="checked").json()["status"] == "approved"


def test_concurrent_approvals_revive_once(make_server: Any, database_url: str, api: Any) -> None:
    server = make_server(database_url, revive_approvals="2")
    server.start()
    alice = api(server, owner="alice")
    approvers = [api(server, owner=f"op{i}") for i in range(4)]
    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda a=a: answers.append(a.approve(rid).status_code))
        for a in approvers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200, 409, 409, 409]
    assert len(_audit(alice, "revive")) == 1


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("two", "not a rule"),
        ("0", "1..10"),
        ("agent=2", "TYPE:ID"),
        ("robot:x=2", "target type"),
        ("/*=2", "empty organization"),
    ],
)
def test_bad_rules_name_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        parse_rule(spec)


def test_the_strictest_matching_rule_applies() -> None:
    rules = ReviveApprovals.parse("agent:pay*=2;acme/agent:payments=3;acme/*=1")
    assert rules.people_for("acme", "agent", "payments") == 3
    assert rules.people_for("other", "agent", "payments") == 2
    assert rules.people_for("acme", "agent", "mailer") == 1
    assert rules.people_for("acme", "run", "payments") == 1
    assert not ReviveApprovals.parse("1") and ReviveApprovals.parse("2")


def test_two_replicas_expire_a_request_once(make_server: Any, database_url: str, api: Any) -> None:
    """Every replica's expiry pass closes due requests; a conditional update lets one win."""
    replicas = [make_server(database_url, revive_approvals="2") for _ in range(2)]
    for r in replicas:
        r.start()
    alice = api(replicas[0], owner="alice")
    for target in ("a", "b", "c"):
        alice.kill("agent", target)
        assert alice.revive("agent", target).status_code == 202
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    closed: list[int] = []
    barrier = threading.Barrier(2)

    def expire(replica: KillSwitchServer) -> None:
        barrier.wait()
        closed.append(replica.store.expire_revive_requests(later))

    threads = [threading.Thread(target=expire, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(closed) == 3
    assert len(_audit(alice, "revive.expire")) == 3
    assert alice.get(REQUESTS, status="expired").json()["count"] == 3


def test_webhooks_hear_the_revive_only_when_it_happens(
    make_server: Any, database_url: str, api: Any
) -> None:
    from agentguard.server.webhooks.sender import WebhookSettings

    server = make_server(database_url, revive_approvals="2", webhooks=WebhookSettings(send=False))
    server.start()
    alice, bob = api(server, owner="alice"), api(server, owner="bob")
    hook = alice.client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["revive"]}
    ).json()["id"]

    def events() -> list[str]:
        page = alice.get(f"/api/v1/webhooks/{hook}/deliveries").json()
        return [d["event"] for d in page["data"]]

    alice.kill("agent", "bot")
    rid = alice.revive("agent", "bot").json()["id"]
    assert events() == []  # a request revives nothing
    bob.approve(rid)
    assert events() == ["revive"]
