"""Series: an agent's and the organization's calls, refusals, cost, kills and revives over time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentguard.records import utcnow
from agentguard.server import KillSwitchServer

HOUR = timedelta(hours=1)


class Clock:
    """The fleet's wall clock: real time, or a time set by hand."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or utcnow()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet(make_server: Any, database_url: str, clock: Clock) -> KillSwitchServer:
    server: KillSwitchServer = make_server(database_url, clock=clock)
    server.start()
    return server


def beat(instance_id: str, agent_id: str, **fields: Any) -> dict[str, Any]:
    return {"instance_id": instance_id, "agent_id": agent_id, "interval": 60, "executed": 0,
            "refused": 0, "failed": 0, "cost_usd": 0, "version": 0, **fields}  # fmt: skip


def send_beat(client: Any, instance_id: str, agent_id: str, **fields: Any) -> None:
    answer = client.post("/api/v1/heartbeats", json=beat(instance_id, agent_id, **fields))
    assert answer.status_code == 200, answer.text


def refusal(iv_id: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return {"id": iv_id, "action": "send_email", "target_type": "agent", "target_id": "mailer",
            "agent_id": "mailer", "occurred_at": when.isoformat(), **fields}  # fmt: skip


def index_of(series: dict[str, Any], when: datetime) -> int:
    """The bucket of the series holding ``when``."""
    start = datetime.fromisoformat(series["start"])
    return int((when - start).total_seconds() // series["step"])


def test_an_agents_series_counts_each_bucket(
    fleet: KillSwitchServer, api: Any, clock: Clock
) -> None:
    admin = api(fleet)
    # Half past the hour (the fleet's clock may run ahead of real time): clear of boundaries.
    now = utcnow().replace(minute=30, second=0, microsecond=0)
    # Usage comes from heartbeats, bucketed by when the server received them.
    clock.at = now - 3 * HOUR
    send_beat(admin.client, "m-1", "mailer", executed=40, failed=2, cost_usd=1.5)
    clock.at = now - HOUR
    # (Its refused count is not in the series: refusals are counted from interventions.)
    send_beat(admin.client, "m-1", "mailer", executed=100, failed=3, cost_usd=4.0, refused=9)
    send_beat(admin.client, "m-2", "mailer", executed=5, cost_usd=0.25)
    send_beat(admin.client, "o-1", "other", executed=1000, cost_usd=99)
    # Refusals are the interventions reported, bucketed by when they occurred.
    reported = [
        refusal("iv-1", now - 2 * HOUR),
        refusal("iv-2", now - 2 * HOUR + timedelta(minutes=5)),
        refusal("iv-3", now - HOUR, type="UNAVAILABLE"),
        refusal("iv-4", now - HOUR, type="OBSERVED"),  # not a call refused or stopped
        refusal("iv-5", now - HOUR, agent_id="other"),
        refusal("iv-6", now - 7 * HOUR),  # before the window
        refusal("iv-7", now - HOUR, type="CANCELLED", ran_for_ms=2310),  # stopped while it ran
    ]
    sent = admin.client.post("/api/v1/interventions", json={"interventions": reported})
    assert sent.json() == {"received": 7, "created": 7}
    clock.at = now

    answer = admin.get("/api/v1/agents/mailer/series", window="6h", step="1h")
    assert answer.status_code == 200, answer.text
    series = answer.json()
    assert (series["agent_id"], series["window"], series["step"]) == ("mailer", 21600, 3600)
    start, end = (datetime.fromisoformat(series[k]) for k in ("start", "end"))
    assert start.timestamp() % 3600 == 0 and end - start == 6 * HOUR and start < now < end
    points = series["points"]
    assert [datetime.fromisoformat(p["at"]) for p in points] == [start + i * HOUR for i in range(6)]
    expected = [dict.fromkeys(("executed", "refused", "cancelled", "unavailable", "failed"), 0)
                | {"cost_usd": 0.0} for _ in range(6)]  # fmt: skip
    expected[index_of(series, now - 3 * HOUR)].update(executed=40, failed=2, cost_usd=1.5)
    expected[index_of(series, now - HOUR)].update(
        executed=65, failed=1, cost_usd=2.75, unavailable=1, cancelled=1
    )
    expected[index_of(series, now - 2 * HOUR)].update(refused=2)
    assert [{k: v for k, v in p.items() if k != "at"} for p in points] == expected
    assert series["totals"] == {"executed": 105, "refused": 2, "cancelled": 1, "unavailable": 1,
                                "failed": 3, "cost_usd": 4.25}  # fmt: skip

    # The organization's series sums every agent.
    org = admin.get("/api/v1/series", window="6h", step="1h").json()
    assert org["agent_id"] is None and org["start"] == series["start"]
    assert org["totals"] == {**series["totals"], "executed": 1105, "cost_usd": 103.25,
                             "refused": 3}  # fmt: skip


def test_kills_and_revives_that_concern_the_agent(fleet: KillSwitchServer, api: Any) -> None:
    alice = api(fleet, owner="alice")
    bob = api(fleet, owner="bob")
    send_beat(alice.client, "m-1", "mailer", run_id="run-7", mission_id="q3")
    changes = [
        (alice, "kill", "agent", "mailer", "Drained $3k in 4 minutes"),
        (bob, "revive", "agent", "mailer", None),
        (alice, "kill", "run", "run-7", "Looping on one invoice"),
        (alice, "kill", "mission", "q3", "Wrong audience"),
        (alice, "kill", "tool", "send_email", "Provider bounces everything"),
        (alice, "kill", "tool", "export", "Nobody's business"),  # never refused mailer
        (alice, "kill", "agent", "other", "Not mailer"),
        (alice, "kill", "run", "run-8", "Another run"),
    ]
    for who, kind, target_type, target_id, reason in changes:
        body = {"target_type": target_type, "target_id": target_id}
        if reason:
            body["reason"] = reason
        assert who.client.post(f"/api/v1/kill-switch/{kind}", json=body).status_code == 200
    refused = refusal("iv-1", utcnow(), target_type="tool", target_id="send_email")
    assert alice.client.post("/api/v1/interventions", json={"interventions": [refused]}).is_success

    series = alice.get("/api/v1/agents/mailer/series").json()
    assert (series["window"], series["step"], len(series["points"])) == (86400, 300, 288)
    events = [(e["kind"], e["target_type"], e["target_id"], e["actor"], e["reason"])
              for e in series["events"]]  # fmt: skip
    assert events == [
        ("kill", "agent", "mailer", alice.actor, "Drained $3k in 4 minutes"),
        ("revive", "agent", "mailer", bob.actor, "Drained $3k in 4 minutes"),
        ("kill", "run", "run-7", alice.actor, "Looping on one invoice"),
        ("kill", "mission", "q3", alice.actor, "Wrong audience"),
        ("kill", "tool", "send_email", alice.actor, "Provider bounces everything"),
    ]
    assert series["events_count"] == 5
    times = [e["at"] for e in series["events"]]
    assert times == sorted(times) and all(series["start"] <= t < series["end"] for t in times)
    kill, revive = series["events"][:2]
    assert kill["kill_switch_id"] == revive["kill_switch_id"] is not None
    assert revive["version"] == kill["version"] + 1
    # The organization's series has every kill and revive.
    org = alice.get("/api/v1/series").json()
    assert org["events_count"] == len(changes)
    assert [e["target_id"] for e in org["events"]] == [c[3] for c in changes]


def test_the_newest_events_when_there_are_many(
    fleet: KillSwitchServer, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentguard.server.api.series.MAX_EVENTS", 3)
    admin = api(fleet)
    for n in range(3):
        admin.kill("agent", "mailer", reason=f"round {n}")
        admin.revive("agent", "mailer")
    series = admin.get("/api/v1/agents/mailer/series", window="1h", step="1m").json()
    assert series["events_count"] == 6
    assert [(e["kind"], e["reason"]) for e in series["events"]] == [
        ("revive", "round 1"), ("kill", "round 2"), ("revive", "round 2"),
    ]  # fmt: skip


def test_an_unknown_agent_is_not_found(fleet: KillSwitchServer, api: Any) -> None:
    admin = api(fleet)
    answer = admin.get("/api/v1/agents/nobody/series")
    assert answer.status_code == 404
    assert answer.json()["field"] == "agent_id" and "'nobody'" in answer.json()["detail"]
    # Known from its refusals alone (it never sent a heartbeat): found.
    refused = refusal("iv-1", utcnow(), agent_id="quiet", target_id="quiet")
    assert admin.client.post("/api/v1/interventions", json={"interventions": [refused]}).is_success
    assert admin.get("/api/v1/agents/quiet/series").json()["totals"]["refused"] == 1
    # Known from its instances, with nothing in the window: zeros.
    send_beat(admin.client, "q-1", "idle")
    idle = admin.get("/api/v1/agents/idle/series", window="1h", step="1h").json()
    assert len(idle["points"]) == 1 and idle["totals"]["executed"] == 0


def test_buckets_follow_the_step_since_the_epoch(
    fleet: KillSwitchServer, api: Any, clock: Clock
) -> None:
    admin = api(fleet)
    clock.at = datetime(2026, 4, 18, 17, 4, 59, tzinfo=timezone.utc)
    series = admin.get("/api/v1/series", window="1h", step="10m").json()
    assert (series["start"], series["end"]) == ("2026-04-18T16:10:00Z", "2026-04-18T17:10:00Z")
    # A window that is not a whole number of steps gets one bucket more.
    series = admin.get("/api/v1/series", window="25m", step="10m").json()
    assert (series["start"], len(series["points"])) == ("2026-04-18T16:40:00Z", 3)
    series = admin.get("/api/v1/series", window="2d", step="1d").json()
    assert series["start"] == "2026-04-17T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"window": "24"}, "window", "a whole number and a unit"),
        ({"window": "1y"}, "window", "a whole number and a unit"),
        ({"window": "0h"}, "window", "a whole number and a unit"),
        ({"window": "-1h"}, "window", "a whole number and a unit"),
        ({"window": "59s"}, "window", "from 1m to 31d"),
        ({"window": "32d"}, "window", "from 1m to 31d"),
        ({"step": "5s"}, "step", "from 10s to 1d"),
        ({"step": "15s"}, "step", "a whole multiple of 10s"),
        ({"step": "2d", "window": "7d"}, "step", "from 10s to 1d"),
        ({"step": "2h", "window": "1h"}, "step", "not be longer than the window"),
        ({"step": "10s", "window": "24h"}, "step", "at most 2,880 steps, so at least 30s"),
    ],
)
def test_bad_windows_and_steps_are_refused(
    fleet: KillSwitchServer, api: Any, params: dict[str, str], field: str, words: str
) -> None:
    admin = api(fleet)
    for path in ("/api/v1/series", "/api/v1/agents/mailer/series"):
        answer = admin.get(path, **params)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
        assert answer.json()["detail"].startswith(f"{field}: ") and words in answer.json()["detail"]


def test_readers_read_series_and_agent_keys_do_not(fleet: KillSwitchServer, api: Any) -> None:
    admin = api(fleet)
    send_beat(admin.client, "m-1", "mailer")
    reader = api(fleet, scopes=("read",), owner="erin")
    assert reader.get("/api/v1/agents/mailer/series").status_code == 200
    own = api(fleet, scopes=("agent",), owner="mailer-key", agents=["mailer"])
    for path in ("/api/v1/agents/mailer/series", "/api/v1/series"):
        answer = own.get(path)
        assert answer.status_code == 403 and answer.json()["required_scope"] == "operator"
