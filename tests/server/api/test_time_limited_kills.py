"""Time-limited kills over the API: ``expires_at`` or ``duration`` on ``POST /kill``, the record
that carries ``expires_at``, refusals of bad expiries, and the server reviving at expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from support import eventually

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
}  # fmt: skip  (the seed's record: tests/server/api/test_seed_api.py)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_kill_for_a_duration_carries_expires_at(server: Any, api: Any) -> None:
    a = api(server)
    before = datetime.now(timezone.utc)
    response = a.kill("agent", "bot", reason="look", duration="1h30m")
    assert response.status_code == 200, response.text
    record = response.json()
    assert set(record) == RECORD_KEYS | {"expires_at"}
    expires = _at(record["expires_at"])
    assert (
        before + timedelta(minutes=90)
        <= expires
        <= datetime.now(timezone.utc) + timedelta(minutes=90)
    )
    active = a.get("/api/v1/kill-switch/active").json()["data"]
    assert [r["expires_at"] for r in active] == [record["expires_at"]]
    # The seed's check answer keeps its exact keys.
    assert set(a.check("agent", "bot").json()) == {
        "is_killed", "target_type", "target_id", "reason", "killed_at"
    }  # fmt: skip


def test_kill_until_a_time_and_in_seconds(server: Any, api: Any) -> None:
    a = api(server)
    until = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    record = a.kill("run", "r1", expires_at=until.isoformat()).json()
    assert _at(record["expires_at"]) == until
    seconds = a.kill("tool", "send_email", duration="120s").json()
    assert _at(seconds["expires_at"]) - _at(seconds["killed_at"]) == pytest.approx(
        timedelta(seconds=120), abs=timedelta(seconds=2)
    )


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"duration": "1h", "expires_at": "tomorrow"}, "duration", "not both"),
        ({"duration": "soon"}, "duration", "90s"),
        ({"duration": "0s"}, "duration", "more than 0"),
        ({"duration": "0h0m"}, "duration", "more than 0"),
        ({"duration": 60}, "duration", "string"),
        ({"duration": "1H"}, "duration", "lower case"),
        ({"duration": "400d"}, "duration", "366 days"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "future"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "expires_at", "366 days"),
        ({"expires_at": 1893456000}, "expires_at", "RFC 3339"),
    ],
)
def test_bad_expiries_are_422_naming_the_field(
    server: Any, api: Any, body: dict[str, Any], field: str, words: str
) -> None:
    a = api(server)
    if body.get("expires_at") == "tomorrow":
        body["expires_at"] = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    response = a.kill("agent", "bot", **body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and words in problem["detail"], problem
    assert a.get("/api/v1/kill-switch/active").json()["count"] == 0


def test_the_server_revives_at_expiry_audited_as_expiry(
    make_server: Any, database_url: str, api: Any
) -> None:
    server = make_server(database_url, expiry_interval=0.05)
    server.start()
    a = api(server)
    killed = a.kill("agent", "bot", reason="an hour", duration="1s").json()
    assert a.check("agent", "bot").json()["is_killed"] is True
    eventually(lambda: a.check("agent", "bot").json()["is_killed"] is False, timeout=10)
    audit = a.get("/api/v1/audit", action="revive").json()["data"]
    assert [(e["actor"], e["target_id"]) for e in audit] == [("expiry", "bot")]
    assert audit[0]["detail"].startswith("expired at ")
    history = server.store.changes_since("org_a", 0) or []
    assert [(c.kind, c.kill_switch.id) for c in history] == [
        ("kill", killed["id"]),
        ("revive", killed["id"]),
    ]
    assert history[1].kill_switch.revived_by == "expiry"
