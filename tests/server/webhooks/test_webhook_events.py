"""Every event in every format reaches a real receiver on loopback, on SQLite and PostgreSQL.

The standard format's signatures are checked with ``standardwebhooks``, the spec's own
reference library (an independent verifier); Slack messages carry escaped text; PagerDuty
gets a trigger per kill and the resolve of the same ``dedup_key`` on revive.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from agentguard import Guard, PolicyViolationError
from agentguard.protocol import WEBHOOK_EVENTS
from agentguard.rules import BudgetRule, RateRule
from agentguard.server import KillSwitchServer, WebhookSettings
from support.api import Api
from support.receiver import Received, Receiver

ROUTING_KEY = "R0123456789abcdef0123456789abcde"
REASON = "<!channel> drained $3k & <https://evil.example|click here>"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def register(admin: Api, receiver: Receiver) -> dict[str, dict[str, Any]]:
    """One webhook per format, each taking every event."""
    hooks = {}
    for fmt in ("standard", "slack", "pagerduty"):
        body: dict[str, Any] = {"url": receiver.url(f"/{fmt}"), "events": list(WEBHOOK_EVENTS),
                                "format": fmt, "name": f"{fmt} hook"}  # fmt: skip
        if fmt == "pagerduty":
            body["routing_key"] = ROUTING_KEY
        answer = admin.client.post("/api/v1/webhooks", json=body)
        assert answer.status_code == 200, answer.text
        hooks[fmt] = answer.json()
    return hooks


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def beat(agent: Api, instance: str, agent_id: str, cost: float, version: int = 0) -> Any:
    body = {"instance_id": instance, "agent_id": agent_id, "interval": 10, "executed": 1,
            "refused": 0, "failed": 0, "cost_usd": cost, "version": version}  # fmt: skip
    answer = agent.client.post("/api/v1/heartbeats", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_event_reaches_every_format(
    make_server: Callable[..., KillSwitchServer],
    database_url: str,
    api: Callable[..., Api],
    receiver: Receiver,
) -> None:
    rules = [
        BudgetRule("fleet-budget", limit_usd=10, window=3600),
        BudgetRule("watch", limit_usd=1, window=3600, mode="observe"),
    ]
    server = make_server(
        database_url, rules=rules, webhooks=WebhookSettings(allow_private_addresses=True)
    )
    server.start()
    admin = api(server)
    agent = api(server, scopes=("agent",), owner="bot", agents=["looper", "spender", "slow"])
    hooks = register(admin, receiver)

    # kill and revive, with a reason that tries to ping a Slack channel and hide a link
    killed = admin.kill("agent", "rogue", reason=REASON).json()
    assert admin.revive("agent", "rogue").status_code == 200
    # ack.timeout: a live instance that never acknowledges, and a kill that waits for it
    beat(agent, "slow-1", "slow", 0.0)
    slow = admin.client.post(
        "/api/v1/kill-switch/kill",
        params={"wait": 0.3},
        json={"target_type": "agent", "target_id": "slow", "reason": "stuck"},
    )
    assert slow.status_code == 200 and slow.headers["x-agentguard-acknowledged"] == "0/1"
    # drill.failed: a drill of it, which its instance (heartbeats, no stream) cannot answer
    drilled = admin.client.post(
        "/api/v1/drills", json={"target_type": "agent", "target_id": "slow", "timeout": 0.3}
    ).json()
    assert drilled["status"] == "failed" and drilled["not_answering"] == ["slow-1"]
    # rule.observed by a server rule, then rule.tripped (and kill) by another
    beat(agent, "spender-1", "spender", 5.0)
    assert server.store.get_active("org_a", "agent", "spender") is None
    beat(agent, "spender-1", "spender", 15.0)
    tripped = server.store.get_active("org_a", "agent", "spender")
    assert tripped is not None and tripped.killed_by == "rule:fleet-budget"
    # rule.observed reported by a guard's own rule; fail_closed from refusals without kill state
    observed = {"id": "iv-observed", "type": "OBSERVED", "action": "rule:loop-guard",
                "target_type": "agent", "target_id": "looper", "agent_id": "looper",
                "instance_id": "looper-1", "reason": "same call 20 times in 60 s",
                "killed_by": "rule:loop-guard", "occurred_at": now()}  # fmt: skip
    unavailable = [
        {
            "id": f"iv-unavailable-{n}",
            "type": "UNAVAILABLE",
            "action": "send_email",
            "target_type": "agent",
            "target_id": "looper",
            "agent_id": "looper",
            "instance_id": "vm-12",
            "reason": "kill state unavailable: never synced",
            "occurred_at": now(),
        }  # fmt: skip
        for n in range(3)
    ]
    sent = agent.client.post(
        "/api/v1/interventions", json={"interventions": [observed, *unavailable]}
    )
    assert sent.json() == {"received": 4, "created": 4}
    # ... and refusals of the same instance soon after raise no second fail_closed
    more = [{**unavailable[0], "id": f"iv-unavailable-late-{n}"} for n in range(2)]
    assert agent.client.post("/api/v1/interventions", json={"interventions": more}).is_success
    # webhook.test, to each webhook alone
    for hook in hooks.values():
        test = admin.client.post(f"/api/v1/webhooks/{hook['id']}/test")
        assert test.status_code == 200 and test.json()["status"] == "pending"

    expected = Counter(
        {
            "kill": 3,
            "revive": 1,
            "ack.timeout": 1,
            "rule.observed": 2,
            "rule.tripped": 1,
            "fail_closed": 1,
            "webhook.test": 1,
            "drill.failed": 1,
        }  # fmt: skip
    )
    total = sum(expected.values())
    got = {fmt: receiver.wait_for(total, f"/{fmt}") for fmt in hooks}

    # -- standard: signed, verified by the reference library --------------------------------
    verifier = Verifier(hooks["standard"]["secret"])
    events = [verifier.verify(r.body, r.headers) for r in got["standard"]]
    assert Counter(e["type"] for e in events) == expected
    ids = [r.headers["webhook-id"] for r in got["standard"]]
    assert len(set(ids)) == len(ids) and all(i.startswith("msg_") for i in ids)
    tampered = got["standard"][0]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered.body.replace(b"}", b" }", 1), tampered.headers)
    by_type = {e["type"]: e for e in events}
    kills = {e["data"]["kill_switch"]["id"]: e for e in events if e["type"] == "kill"}
    assert set(kills) == {killed["id"], slow.json()["id"], tripped.id}
    kill = kills[killed["id"]]
    assert kill["data"]["kill_switch"]["reason"] == REASON and kill["data"]["version"] == 1
    assert kill["data"]["organization_id"] == "org_a"
    trip = by_type["rule.tripped"]["data"]
    assert trip["rule"] == "fleet-budget" and trip["kill_switch"]["id"] == tripped.id
    timeout = by_type["ack.timeout"]["data"]
    assert (timeout["live"], timeout["acknowledged"], timeout["waited_s"]) == (1, 0, 0.3)
    assert [i["instance_id"] for i in timeout["waiting_on"]] == ["slow-1"]
    assert timeout["requested_by"] == admin.actor
    observations = {e["data"]["rule"]: e["data"] for e in events if e["type"] == "rule.observed"}
    assert observations["watch"]["reported_by"] == "the server"
    assert observations["watch"]["target_id"] == "spender"
    assert observations["loop-guard"]["reported_by"] == agent.actor
    assert observations["loop-guard"]["instance_id"] == "looper-1"
    closed = by_type["fail_closed"]["data"]
    assert (closed["instance_id"], closed["agent_id"], closed["refused"]) == ("vm-12", "looper", 3)
    assert by_type["webhook.test"]["data"]["webhook_id"] == hooks["standard"]["id"]
    failed = by_type["drill.failed"]["data"]
    assert (failed["target_type"], failed["target_id"], failed["live"]) == ("agent", "slow", 1)
    assert failed["acknowledged"] == 0 and failed["not_answering"] == ["slow-1"]
    assert failed["drill"]["id"] == drilled["id"] and failed["drill"]["status"] == "failed"

    # -- slack: text only, escaped -------------------------------------------------------------
    texts = [r.json() for r in got["slack"]]
    assert all(set(t) == {"text"} for t in texts)
    assert not any("<" in t["text"] or ">" in t["text"] for t in texts)
    kill_text = next(t["text"] for t in texts if "drained" in t["text"] and "Killed" in t["text"])
    assert "&lt;!channel&gt; drained $3k &amp; &lt;https://evil.example|click here&gt;" in kill_text
    assert kill_text.startswith(":octagonal_sign: Killed agent 'rogue' by usr_abc (key ag_")
    assert any(t["text"].startswith(":rotating_light: Rule fleet-budget tripped") for t in texts)
    assert any("acknowledged by 0/1 live instances within 0.3 s; waiting on slow-1" in t["text"]
               for t in texts)  # fmt: skip
    assert any("Instance vm-12 of agent 'looper' refused 3 calls" in t["text"] for t in texts)
    assert any(
        t["text"].startswith(
            ":fire_engine: Drill of agent 'slow' failed: 0/1 live instances acknowledged it; "
            "not answering: slow-1 (a kill may not reach them)"
        )
        for t in texts
    )

    # -- pagerduty: trigger on kill, resolve on revive, one dedup_key per kill switch ----------
    pages = [r.json() for r in got["pagerduty"]]
    assert all(p["routing_key"] == ROUTING_KEY for p in pages)
    rogue = [p for p in pages if p["dedup_key"] == killed["id"]]
    assert [p["event_action"] for p in rogue] == ["trigger", "resolve"]
    assert rogue[0]["payload"]["severity"] == "critical"
    assert rogue[0]["payload"]["source"] == "agent/rogue"
    assert rogue[0]["payload"]["summary"].startswith("Killed agent 'rogue' by usr_abc")
    spender = [p for p in pages if p["dedup_key"] == tripped.id]
    assert [p["payload"]["class"] for p in spender] == ["kill", "rule.tripped"]
    slow_id = slow.json()["id"]
    assert [p["payload"]["class"] for p in pages if p["dedup_key"] == slow_id] == [
        "kill",
        "ack.timeout",
    ]
    [drill_page] = [
        p for p in pages if p["dedup_key"] == "agentguard/org_a/drill.failed/agent/slow"
    ]
    assert drill_page["event_action"] == "trigger" and drill_page["payload"]["severity"] == "error"
    assert drill_page["payload"]["source"] == "agent/slow"
    assert drill_page["payload"]["summary"].startswith("Drill of agent 'slow' failed: 0/1")
    triggers = [p for p in pages if p["event_action"] == "trigger"]
    assert all(len(p["dedup_key"]) <= 255 and p["payload"]["summary"] for p in triggers)

    # Nothing more arrives; every delivery is logged as delivered, once.
    for fmt, hook in hooks.items():
        log = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries", limit=100).json()
        assert log["count"] == total
        assert {(d["status"], d["attempts"], d["response_status"]) for d in log["data"]} == {
            ("delivered", 1, 200)
        }, fmt
    assert len(receiver.received()) == 3 * total
    assert server.webhook_sender.counts().delivered == 3 * total


def test_a_kill_is_sent_before_its_revive(
    make_server: Callable[..., KillSwitchServer],
    database_url: str,
    api: Callable[..., Api],
    receiver: Receiver,
) -> None:
    """The revive of a kill waits while its kill is being retried (PagerDuty must never get
    resolve before trigger); events about other subjects are not held up."""
    server = make_server(
        database_url,
        webhooks=WebhookSettings(allow_private_addresses=True, first_retry=0.3),
    )
    server.start()
    admin = api(server)
    hook = admin.client.post(
        "/api/v1/webhooks", json={"url": receiver.url(), "events": ["kill", "revive"]}
    ).json()
    first = {"n": 0}

    def refuse_the_first(request: Received) -> tuple[int, dict[str, str], bytes]:
        first["n"] += 1
        return (503, {}, b"busy") if first["n"] == 1 else (200, {}, b"ok")

    receiver.answer = refuse_the_first
    killed = admin.kill("agent", "a").json()
    receiver.wait_for(1)
    assert admin.revive("agent", "a").status_code == 200
    other = admin.kill("agent", "b").json()
    got = receiver.wait_for(4)
    sent = [
        (json.loads(r.body)["type"], json.loads(r.body)["data"]["kill_switch"]["id"]) for r in got
    ]
    assert sent[0] == ("kill", killed["id"])  # refused with 503
    assert sent.index(("kill", killed["id"]), 1) < sent.index(("revive", killed["id"]))
    assert ("kill", other["id"]) in sent
    log = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
    retried = next(d for d in log if d["event"] == "kill" and d["subject"] == killed["id"])
    assert (retried["status"], retried["attempts"], retried["response_status"]) == (
        "delivered",
        2,
        200,
    )


def test_a_rule_of_an_in_process_guard_trips_rule_tripped(
    make_server: Callable[..., KillSwitchServer],
    database_url: str,
    api: Callable[..., Api],
    receiver: Receiver,
) -> None:
    server = make_server(database_url, webhooks=WebhookSettings(allow_private_addresses=True))
    server.start()
    admin = api(server)
    assert admin.client.post(
        "/api/v1/webhooks", json={"url": receiver.url(), "events": ["rule.tripped"]}
    ).is_success
    guard = Guard(
        server,
        organization_id="org_a",
        agent_id="looper",
        rules=[RateRule("calls", limit=2, window=60)],
    )
    send = guard.guarded_action(name="send_email")(lambda: None)
    send()
    send()
    with pytest.raises(PolicyViolationError):
        send()
    [request] = receiver.wait_for(1)
    event = request.json()
    assert event["type"] == "rule.tripped" and event["data"]["rule"] == "calls"
    assert event["data"]["kill_switch"]["killed_by"] == "rule:calls"
    guard.close()
