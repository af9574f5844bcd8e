"""The seed endpoints: kill, revive, check and active, with their exact shapes and errors."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from agentguard.server.store.tables import kill_switches

RECORD_KEYS = {
    "id",
    "target_type",
    "target_id",
    "reason",
    "is_active",
    "killed_by",
    "killed_at",
    "revived_by",
    "revived_at",
    "organization_id",
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_kill_returns_the_full_record(server: Any, api: Any) -> None:
    a = api(server, owner="usr_abc")
    response = a.kill("agent", "rogue-bot", reason="Drained $3k in 4 minutes")
    assert response.status_code == 200
    record = response.json()
    assert set(record) == RECORD_KEYS
    assert record["target_type"] == "agent"
    assert record["target_id"] == "rogue-bot"
    assert record["reason"] == "Drained $3k in 4 minutes"
    assert record["is_active"] is True
    assert record["killed_by"] == a.actor == f"usr_abc (key {a.key_id})"
    assert ISO_Z.match(record["killed_at"])
    assert record["revived_by"] is None and record["revived_at"] is None
    assert record["organization_id"] == "org_a"


def test_kill_without_reason(server: Any, api: Any) -> None:
    record = api(server).kill("run", "run-7").json()
    assert record["reason"] is None and record["is_active"] is True


def test_second_kill_is_409_with_the_existing_record(server: Any, api: Any) -> None:
    a = api(server)
    first = a.kill(reason="first").json()
    response = a.kill(reason="second")
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert "already killed" in body["detail"]
    assert body["kill_switch"] == first


def test_revive_returns_the_record_and_keeps_history(server: Any, api: Any) -> None:
    a = api(server)
    killed = a.kill(reason="one").json()
    response = a.revive()
    assert response.status_code == 200
    revived = response.json()
    assert set(revived) == RECORD_KEYS
    assert revived["id"] == killed["id"]
    assert revived["is_active"] is False
    assert revived["revived_by"] == a.actor
    assert ISO_Z.match(revived["revived_at"])
    assert revived["killed_at"] == killed["killed_at"]
    # Killed again: a new record; the revived one stays in the table.
    again = a.kill(reason="two").json()
    assert again["id"] != killed["id"]
    with server.database.read() as conn:
        rows = conn.execute(select(kill_switches.c.id, kill_switches.c.is_active)).all()
    assert sorted(rows) == sorted([(killed["id"], False), (again["id"], True)])


def test_revive_without_active_kill_is_404(server: Any, api: Any) -> None:
    a = api(server)
    response = a.revive("mission", "never-killed")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert "never-killed" in body["detail"]
    a.kill("mission", "m1")
    a.revive("mission", "m1")
    assert a.revive("mission", "m1").status_code == 404


def test_check_has_exactly_the_seed_shape(server: Any, api: Any) -> None:
    a = api(server)
    response = a.check("agent", "rogue-bot")
    assert response.status_code == 200
    assert response.json() == {
        "is_killed": False,
        "target_type": "agent",
        "target_id": "rogue-bot",
        "reason": None,
        "killed_at": None,
    }
    killed = a.kill(reason="Drained $3k in 4 minutes").json()
    assert a.check().json() == {
        "is_killed": True,
        "target_type": "agent",
        "target_id": "rogue-bot",
        "reason": "Drained $3k in 4 minutes",
        "killed_at": killed["killed_at"],
    }
    a.revive()
    assert a.check().json()["is_killed"] is False


def test_check_answers_from_the_index_without_a_query(server: Any, api: Any) -> None:
    a = api(server)
    a.kill(reason="x")
    a.check()  # the key is now verified and cached
    statements: list[str] = []

    from sqlalchemy import event

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(server.database.engine, "before_cursor_execute", record)
    try:
        for _ in range(20):
            assert a.check().json()["is_killed"] is True
            assert a.check("agent", "other").json()["is_killed"] is False
    finally:
        event.remove(server.database.engine, "before_cursor_execute", record)
    assert statements == []


def test_fast_and_full_check_paths_answer_alike(server: Any, api: Any) -> None:
    a = api(server)
    a.kill("tool", "send_email", reason="naïve “quotes” \\ and\nnewline")
    a.check("tool", "send_email")  # caches the key
    fast = a.check("tool", "send_email")
    full = a.client.get(  # an X-Request-ID sends the request through the full app
        "/api/v1/kill-switch/check",
        params={"target_type": "tool", "target_id": "send_email"},
        headers={"X-Request-ID": "req-1"},
    )
    assert full.headers["x-request-id"] == "req-1"
    assert fast.json() == full.json()
    assert fast.headers["content-type"] == full.headers["content-type"] == "application/json"


def test_active_lists_newest_first_with_total_count(server: Any, api: Any) -> None:
    a = api(server)
    ids = [a.kill("agent", f"bot-{i}").json()["id"] for i in range(5)]
    a.kill("run", "r1")
    a.revive("run", "r1")
    body = a.get("/api/v1/kill-switch/active").json()
    assert set(body) == {"data", "count"}
    assert body["count"] == 5
    assert [r["id"] for r in body["data"]] == ids[::-1]
    assert all(set(r) == RECORD_KEYS and r["is_active"] for r in body["data"])
    page = a.get("/api/v1/kill-switch/active", skip=1, limit=2).json()
    assert page["count"] == 5
    assert [r["id"] for r in page["data"]] == ids[::-1][1:3]
    assert a.get("/api/v1/kill-switch/active", skip=10).json() == {"data": [], "count": 5}


def test_every_target_type(server: Any, api: Any) -> None:
    a = api(server)
    for target_type in ("agent", "run", "mission", "tool"):
        assert a.kill(target_type, "t").status_code == 200
        assert a.check(target_type, "t").json()["is_killed"] is True
    assert a.get("/api/v1/kill-switch/active").json()["count"] == 4
