"""The audit log, and interventions: batch ingest, idempotency, filters, paging and counts."""

from __future__ import annotations

from typing import Any

import pytest


def test_audit_records_every_operator_action(server: Any, api: Any) -> None:
    a = api(server, owner="usr_abc")
    killed = a.client.post(
        "/api/v1/kill-switch/kill",
        json={"target_type": "agent", "target_id": "bot", "reason": "loops"},
        headers={"X-Request-ID": "req-kill-1"},
    )
    assert killed.headers["x-request-id"] == "req-kill-1"
    a.revive("agent", "bot")
    key = a.client.post("/api/v1/keys", json={"scopes": ["agent"]}).json()
    a.client.delete(f"/api/v1/keys/{key['id']}")

    body = a.get("/api/v1/audit").json()
    actions = [e["action"] for e in body["data"]]
    # Newest first; the first entry is the creation of the test's own key.
    assert actions == ["key.revoke", "key.create", "revive", "kill", "key.create"]
    assert body["count"] == 5
    kill = body["data"][3]
    assert kill["actor"] == a.actor
    assert kill["organization_id"] == "org_a"
    assert (kill["target_type"], kill["target_id"]) == ("agent", "bot")
    assert kill["detail"] == "loops"
    assert kill["request_id"] == "req-kill-1"
    assert kill["version"] == 1 and body["data"][2]["version"] == 2
    assert kill["created_at"] == killed.json()["killed_at"]
    revoke = body["data"][0]
    assert (revoke["target_type"], revoke["target_id"]) == ("api_key", key["id"])
    assert revoke["request_id"]  # generated when the caller sent none


def test_a_failed_kill_is_not_audited(server: Any, api: Any) -> None:
    a = api(server)
    a.kill()
    assert a.kill().status_code == 409
    assert a.revive("run", "nope").status_code == 404
    assert a.get("/api/v1/audit", action="kill").json()["count"] == 1
    assert a.get("/api/v1/audit", action="revive").json()["count"] == 0


def test_audit_filters_and_paging(server: Any, api: Any) -> None:
    a = api(server)
    for i in range(4):
        a.kill("agent", f"bot-{i}")
    a.kill("run", "r-1")
    a.revive("agent", "bot-0")
    assert a.get("/api/v1/audit", action="kill").json()["count"] == 5
    assert a.get("/api/v1/audit", target_type="run").json()["count"] == 1
    only = a.get("/api/v1/audit", target_type="agent", target_id="bot-0").json()
    assert [e["action"] for e in only["data"]] == ["revive", "kill"]
    page = a.get("/api/v1/audit", action="kill", skip=1, limit=2).json()
    assert page["count"] == 5
    assert [e["target_id"] for e in page["data"]] == ["bot-3", "bot-2"]
    latest = a.get("/api/v1/audit", limit=1).json()["data"][0]
    since = a.get("/api/v1/audit", since=latest["created_at"]).json()
    assert [e["id"] for e in since["data"]] == [latest["id"]]
    assert a.get("/api/v1/audit", since="2999-01-01T00:00:00Z").json()["count"] == 0


def intervention(i: int, **fields: Any) -> dict[str, Any]:
    base = {
        "id": f"iv-{i}",
        "type": "HARD_BLOCK",
        "action": "send_email",
        "target_type": "agent",
        "target_id": "bot",
        "agent_id": "bot",
        "instance_id": "host-1",
        "occurred_at": f"2026-04-18T17:00:{i:02d}Z",
    }
    return {**base, **fields}


def test_batch_is_idempotent_per_intervention_id(server: Any, api: Any) -> None:
    agent = api(server, scopes=("agent",))
    reader = api(server, scopes=("read",))
    batch = [intervention(i) for i in range(10)]
    first = agent.client.post("/api/v1/interventions", json={"interventions": batch})
    assert first.status_code == 200
    assert first.json() == {"received": 10, "created": 10}
    again = agent.client.post(
        "/api/v1/interventions", json={"interventions": batch[5:] + [intervention(10)]}
    )
    assert again.json() == {"received": 6, "created": 1}
    dup_in_batch = agent.client.post(
        "/api/v1/interventions", json={"interventions": [intervention(11), intervention(11)]}
    )
    assert dup_in_batch.json()["created"] == 1
    listed = reader.get("/api/v1/interventions").json()
    assert listed["count"] == 12
    assert [iv["id"] for iv in listed["data"]][:3] == ["iv-11", "iv-10", "iv-9"]


def test_batch_of_1000(server: Any, api: Any) -> None:
    agent = api(server, scopes=("agent",))
    batch = [intervention(i % 60, id=f"big-{i}") for i in range(1000)]
    response = agent.client.post("/api/v1/interventions", json={"interventions": batch})
    assert response.json() == {"received": 1000, "created": 1000}


def test_hard_block_references_the_kill_switch_and_its_killer(server: Any, api: Any) -> None:
    operator = api(server, owner="usr_ops", scopes=("operator",))
    agent = api(server, owner="usr_bot", scopes=("agent",))
    ks = operator.kill("agent", "bot", reason="runaway").json()
    item = intervention(1, kill_switch_id=ks["id"], reason="runaway")
    agent.client.post("/api/v1/interventions", json={"interventions": [item]})
    stored = operator.get("/api/v1/interventions").json()["data"][0]
    assert stored["kill_switch_id"] == ks["id"]
    assert stored["killed_by"] == operator.actor
    assert stored["type"] == "HARD_BLOCK"


def test_a_refused_model_call_keeps_its_model(server: Any, api: Any) -> None:
    agent = api(server, scopes=("agent",))
    item = intervention(1, action="llm", model="gpt-5-2025-08-07")
    agent.client.post("/api/v1/interventions", json={"interventions": [item, intervention(2)]})
    listed = api(server, scopes=("read",)).get("/api/v1/interventions").json()["data"]
    assert [(iv["action"], iv["model"]) for iv in listed] == [
        ("send_email", None),
        ("llm", "gpt-5-2025-08-07"),
    ]


def test_intervention_filters_and_paging(server: Any, api: Any) -> None:
    a = api(server)
    batch = [
        *(intervention(i) for i in range(5)),
        *(
            intervention(i, id=f"run-{i}", target_type="run", target_id="r-1", action="charge")
            for i in range(5, 8)
        ),
        intervention(9, id="tool-1", target_type="tool", target_id="send_email"),
    ]
    a.client.post("/api/v1/interventions", json={"interventions": batch})

    def ids(**params: Any) -> tuple[list[str], int]:
        body = a.get("/api/v1/interventions", **params).json()
        return [iv["id"] for iv in body["data"]], body["count"]

    assert ids(target_type="run") == (["run-7", "run-6", "run-5"], 3)
    assert ids(target_type="agent", target_id="bot")[1] == 5
    assert ids(action="charge")[1] == 3
    assert ids(type="HARD_BLOCK")[1] == 9
    assert ids(since="2026-04-18T17:00:07Z") == (["tool-1", "run-7"], 2)
    assert ids(since="2026-04-18T19:00:07+02:00") == (["tool-1", "run-7"], 2)
    assert ids(skip=2, limit=3) == (["run-6", "run-5", "iv-4"], 9)
    assert ids(target_id="nobody") == ([], 0)


def test_intervention_counts_per_target(server: Any, api: Any) -> None:
    a = api(server)
    batch = [
        *(intervention(i) for i in range(5)),
        *(intervention(i, id=f"run-{i}", target_type="run", target_id="r-1") for i in range(3)),
        intervention(9, id="tool-1", target_type="tool", target_id="send_email"),
    ]
    a.client.post("/api/v1/interventions", json={"interventions": batch})
    counts = a.get("/api/v1/interventions/counts").json()
    assert counts["count"] == 3
    assert [(c["target_type"], c["target_id"], c["count"]) for c in counts["data"]] == [
        ("agent", "bot", 5),
        ("run", "r-1", 3),
        ("tool", "send_email", 1),
    ]
    assert counts["data"][0]["last_occurred_at"] == "2026-04-18T17:00:04Z"
    assert counts["data"][0]["type"] == "HARD_BLOCK"
    runs = a.get("/api/v1/interventions/counts", target_type="run").json()
    assert [c["target_id"] for c in runs["data"]] == ["r-1"]
    late = a.get("/api/v1/interventions/counts", since="2026-04-18T17:00:04Z").json()
    assert [(c["target_id"], c["count"]) for c in late["data"]] == [("bot", 1), ("send_email", 1)]
    page = a.get("/api/v1/interventions/counts", skip=1, limit=1).json()
    assert page["count"] == 3 and page["data"][0]["target_id"] == "r-1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": ""}, "interventions.0.action"),
        ({"type": "SOFT_BLOCK"}, "interventions.0.type"),
        ({"id": "x" * 65}, "interventions.0.id"),
        ({"reason": "r" * 2001}, "interventions.0.reason"),
        ({"occurred_at": "not a time"}, "interventions.0.occurred_at"),
        ({"extra": 1}, "interventions.0.extra"),
        ({"model": "m" * 257}, "interventions.0.model"),
        ({"model": "gpt-5\u200b"}, "interventions.0.model"),
    ],
)
def test_bad_interventions(server: Any, api: Any, change: dict[str, Any], field: str) -> None:
    a = api(server)
    response = a.client.post(
        "/api/v1/interventions", json={"interventions": [intervention(1, **change)]}
    )
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert a.get("/api/v1/interventions").json()["count"] == 0


def test_dropped_interventions_are_audited(server: Any, api: Any) -> None:
    agent = api(server, scopes=("agent",), owner="bot")
    admin = api(server)
    iv = {
        "id": "iv-d",
        "action": "send",
        "target_type": "agent",
        "target_id": "a",
        "occurred_at": "2026-11-22T10:00:00Z",
    }
    response = agent.client.post(
        "/api/v1/interventions", json={"interventions": [iv], "dropped": 7}
    )
    assert response.status_code == 200
    entries = admin.get("/api/v1/audit", action="interventions.dropped").json()["data"]
    assert len(entries) == 1 and entries[0]["detail"].startswith("7 interventions dropped")
    assert entries[0]["actor"] == agent.actor
    bad = agent.client.post("/api/v1/interventions", json={"interventions": [iv], "dropped": -1})
    assert bad.status_code == 422 and bad.json()["field"] == "dropped"
