"""Organization isolation on every registered route, over real HTTP.

``tests/server/api/test_isolation.py`` probes the endpoints one by one; this test enumerates the
routes the server actually registers and fails when one has no probe here, so a new route
cannot ship without an isolation check. Organization B has data everywhere; each probe runs as
a fresh organization A and must neither see nor change anything of B's.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from httpx_sse import connect_sse
from starlette.routing import Route

from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer
from support.metrics import parse
from support.reliability import Uvicorn

B_TARGET = {"target_type": "agent", "target_id": "shared-bot"}
B_INTERVENTION = {
    "id": "iv-shared",
    "action": "send_email",
    "target_type": "agent",
    "target_id": "shared-bot",
    "occurred_at": "2026-04-18T17:00:00Z",
}
B_SENTINEL_INTERVENTION = {"intervention_type": "budget_exceeded", "outcome": "blocked",
                           "action_name": "send_email", "agent_id": "shared-bot",
                           "run_id": "shared-run", "reason": "B's budget",
                           "timestamp": "2026-04-18T17:00:00Z"}  # fmt: skip
B_LEDGER = {"run_id": "shared-run", "agent_id": "shared-bot",
            "entries": [{"id": "entry-shared", "timestamp": "2026-04-18T17:00:00Z",
                         "action": "send_email", "cost_usd": 4.0, "duration_ms": 12,
                         "outcome": "success"}]}  # fmt: skip
B_HOOK = {"url": "https://hooks.example.com/org-b", "events": ["kill", "revive", "fail_closed"],
          "format": "standard", "name": "B's pager"}  # fmt: skip
B_BEAT = {"instance_id": "shared-instance", "agent_id": "shared-bot", "interval": 10,
          "executed": 5, "refused": 1, "failed": 0, "cost_usd": 2.5, "version": 1}  # fmt: skip


class Org:
    """An organization's admin client of the live server."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.key_id = key.rsplit("_", 1)[0]
        self.http = httpx.Client(base_url=f"{url}/api/v1", headers=bearer(key), timeout=10)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)


class Scene:
    """Org B with data on every endpoint, and a factory of fresh orgs A."""

    def __init__(self, server: Uvicorn, keys: KillSwitchServer) -> None:
        self.server = server
        self.keys = keys  # in-process, on the same database: makes the keys
        self.b = Org(server.url, keys.create_key("org_b", owner="usr_b", scopes=["admin"]))
        b = self.b.http
        created = b.post("/webhooks", json=B_HOOK)
        assert created.status_code == 200, created.text
        self.b_webhook = created.json()["id"]
        assert b.post("/kill-switch/kill", json={**B_TARGET, "reason": "B's"}).status_code == 200
        assert b.post("/interventions", json={"interventions": [B_INTERVENTION]}).is_success
        assert b.post("/heartbeats", json=B_BEAT).json()["killed"] is True
        assert b.put("/checkpoints/shared", json={"state": "B's"}).is_success
        assert b.post("/interventions/", json=B_SENTINEL_INTERVENTION).status_code == 201
        assert b.post("/ingest", json=B_LEDGER).json()["created"] == 1
        # A drill of B's agent: its instances (heartbeats, an AgentSentinel ledger's run)
        # stream nothing, so none answers and it fails.
        drill = b.post("/drills", json={**B_TARGET, "timeout": 0.2}).json()
        assert drill["status"] == "failed" and "shared-instance" in drill["not_answering"]
        self.b_drill = drill["id"]
        run_kill = {"target_type": "run", "target_id": "shared-run", "until": "run_end"}
        assert b.post("/kill-switch/kill", json=run_kill).status_code == 200
        # A revive of B's waiting for approval (made in-process: this server has no rules).
        self.b_revive_request = keys.store.request_revive(
            "org_b", **B_TARGET, actor="usr_b", person="usr_b", people=2, ttl=timedelta(hours=1)
        ).id
        self.b_before = self.b_view()

    def a(self) -> Org:
        org = f"org_a_{uuid.uuid4().hex[:8]}"
        return Org(self.server.url, self.keys.create_key(org, owner="usr_a", scopes=["admin"]))

    def b_view(self) -> dict[str, Any]:
        """Everything B can read (volatile fields of its instance left out)."""
        b = self.b
        agent = b.get("/agents/shared-bot").json()
        series = b.get("/agents/shared-bot/series").json()
        everything = b.get("/series").json()
        return {
            "check": b.get("/kill-switch/check", **B_TARGET).json(),
            "state": b.get("/kill-switch/state").json(),
            "active": b.get("/kill-switch/active").json(),
            "keys": b.get("/keys").json(),
            "audit": b.get("/audit", limit=1000).json(),
            "interventions": b.get("/interventions").json(),
            "counts": b.get("/interventions/counts").json(),
            "acks": {
                k: v
                for k, v in b.get("/kill-switch/acks", **B_TARGET).json().items()
                if k != "instances"
            },  # fmt: skip
            "agent": (
                agent["executed"],
                agent["cost_usd"],
                len(agent["instances"]),
                agent["last_drill"]["id"],
            ),
            "drills": b.get("/drills").json(),
            "series": (series["totals"], series["events"]),
            "org_series": (everything["totals"], everything["events"]),
            "checkpoint": b.get("/checkpoints/shared").json()["state"],
            "revive_requests": b.get("/kill-switch/revive-requests", status="all").json(),
            # Its webhooks, and which events were queued for them (not how sending goes:
            # the sender is working on them meanwhile).
            "webhooks": [
                {k: w[k] for k in ("id", "url", "format", "events", "name", "created_at")}
                for w in b.get("/webhooks").json()["data"]
            ],
            "deliveries": sorted(
                (d["event"], d["event_id"])
                for d in b.get(f"/webhooks/{self.b_webhook}/deliveries").json()["data"]
            ),
        }


def empty(page: httpx.Response) -> bool:
    return page.status_code == 200 and page.json() == {"data": [], "count": 0}


# -- one probe per route: what org A does there, and what it must (not) see --------------------


def kill(s: Scene, a: Org) -> None:
    answer = a.http.post("/kill-switch/kill", json={**B_TARGET, "reason": "A's"})
    assert answer.status_code == 200 and answer.json()["organization_id"] != "org_b"


def revive(s: Scene, a: Org) -> None:
    assert a.http.post("/kill-switch/revive", json=B_TARGET).status_code == 404


def revive_requests(s: Scene, a: Org) -> None:
    assert empty(a.get("/kill-switch/revive-requests", status="all"))
    assert empty(a.get("/kill-switch/revive-requests"))


def approve_revive(s: Scene, a: Org) -> None:
    path = f"/kill-switch/revive-requests/{s.b_revive_request}/approve"
    answer = a.http.post(path, json={})
    assert answer.status_code == 404 and answer.json()["field"] == "request_id"


def reject_revive(s: Scene, a: Org) -> None:
    path = f"/kill-switch/revive-requests/{s.b_revive_request}/reject"
    answer = a.http.post(path, json={"reason": "A's"})
    assert answer.status_code == 404 and answer.json()["field"] == "request_id"


def check(s: Scene, a: Org) -> None:
    assert a.get("/kill-switch/check", **B_TARGET).json()["is_killed"] is False


def state(s: Scene, a: Org) -> None:
    body = a.get("/kill-switch/state").json()
    assert (body["version"], body["active"]) == (0, [])


def active(s: Scene, a: Org) -> None:
    assert empty(a.get("/kill-switch/active"))


def stream(s: Scene, a: Org) -> None:
    """A's stream: an empty snapshot, then A's own changes and interventions, never B's."""
    events: list[tuple[str, Any]] = []

    def read() -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=10.0)) as client, connect_sse(
            client, "GET", f"{a.url}/api/v1/kill-switch/stream", headers=bearer(a.key),
            params={"include": "interventions"},
        ) as source:  # fmt: skip
            for event in source.iter_sse():
                if event.data:
                    events.append((event.event, json.loads(event.data)))
                if len(events) >= 3:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    eventually(lambda: len(events) >= 1, 10)
    assert events[0] == ("snapshot", {"organization_id": events[0][1]["organization_id"],
                                      "version": 0, "active": []})  # fmt: skip
    # B changes and reports first; then A does. A's stream must carry only A's.
    b = s.b.http
    assert b.post("/kill-switch/kill", json={**B_TARGET, "target_id": "b-only"}).is_success
    assert b.post("/kill-switch/revive", json={**B_TARGET, "target_id": "b-only"}).is_success
    b.post("/interventions", json={"interventions": [{**B_INTERVENTION, "id": "iv-b2"}]})
    a.http.post("/kill-switch/kill", json={**B_TARGET, "target_id": "a-only"})
    a.http.post("/interventions", json={"interventions": [{**B_INTERVENTION, "id": "iv-a"}]})
    reader.join(10)
    assert [kind for kind, _ in events] == ["snapshot", "kill", "intervention"], events
    assert events[1][1]["kill_switch"]["target_id"] == "a-only" and events[1][1]["version"] == 1
    assert events[2][1]["id"] == "iv-a"
    s.b_before = s.b_view()  # B's own changes above are B's


def create_key(s: Scene, a: Org) -> None:
    created = a.http.post("/keys", json={"scopes": ["read"]}).json()
    new = Org(a.url, created["secret"])
    assert new.get("/kill-switch/check", **B_TARGET).json()["is_killed"] is False
    assert empty(new.get("/interventions"))


def list_keys(s: Scene, a: Org) -> None:
    assert [k["id"] for k in a.get("/keys").json()["data"]] == [a.key_id]


def revoke_key(s: Scene, a: Org) -> None:
    assert a.http.delete(f"/keys/{s.b.key_id}").status_code == 404


def audit(s: Scene, a: Org) -> None:
    entries = a.get("/audit", limit=1000).json()["data"]
    assert entries and not any(e["organization_id"] == "org_b" for e in entries)


def report_interventions(s: Scene, a: Org) -> None:
    sent = a.http.post("/interventions", json={"interventions": [B_INTERVENTION]})
    assert sent.json() == {"received": 1, "created": 1}  # the same id is A's own


def interventions(s: Scene, a: Org) -> None:
    assert empty(a.get("/interventions"))


def counts(s: Scene, a: Org) -> None:
    assert empty(a.get("/interventions/counts"))


def report_sentinel_intervention(s: Scene, a: Org) -> None:
    """The same record in A: A's own (the same derived id), never B's."""
    sent = a.http.post("/interventions/", json=B_SENTINEL_INTERVENTION)
    assert sent.status_code == 201 and sent.json()["created"] is True
    (stored,) = a.get("/interventions").json()["data"]
    assert stored["id"] == sent.json()["id"] and stored["agent_id"] == "shared-bot"


def ingest_sentinel_ledger(s: Scene, a: Org) -> None:
    """B's entry ids are B's: in A they are new, and count toward A's agent only."""
    sent = a.http.post("/ingest", json=B_LEDGER)
    assert sent.status_code == 202 and sent.json()["created"] == 1
    agent = a.get("/agents/shared-bot").json()
    assert (agent["executed"], agent["cost_usd"]) == (1, 4.0)


def heartbeat(s: Scene, a: Org) -> None:
    assert a.http.post("/heartbeats", json=B_BEAT).status_code == 409  # B's version is not A's
    mine = a.http.post("/heartbeats", json={**B_BEAT, "version": 0}).json()
    assert (mine["killed"], mine["snapshot"]) == (False, None)


def finish_run(s: Scene, a: Org) -> None:
    """Finishing B's run (killed until it ends) from A ends nothing of B's; nor does A's
    instance exiting from a run of the same name."""
    answer = a.http.post("/runs/shared-run/finish")
    assert answer.json() == {"run_id": "shared-run", "ended": None}
    exit_a = {**B_BEAT, "version": 0, "run_id": "shared-run", "status": "exited"}
    assert a.http.post("/heartbeats", json=exit_a).status_code == 200


def ack(s: Scene, a: Org) -> None:
    body = {"instance_id": "shared-instance", "version": 0}
    assert a.http.post("/kill-switch/ack", json=body).json() == {"acknowledged": 0}


def ack_batch(s: Scene, a: Org) -> None:
    """A's batch for B's instance id reaches A's own namespace; B's version is not A's."""
    body = {"instance_id": "shared-instance", "version": 0}
    answer = a.http.post("/kill-switch/acks", json={"acks": [body]})
    assert answer.json() == {"acknowledged": 0, "each": [0]}
    ahead = {**body, "version": B_BEAT["version"]}
    assert a.http.post("/kill-switch/acks", json={"acks": [ahead]}).status_code == 409


def acks(s: Scene, a: Org) -> None:
    assert a.get("/kill-switch/acks", **B_TARGET).status_code == 404


def agents(s: Scene, a: Org) -> None:
    assert empty(a.get("/agents"))


def agent(s: Scene, a: Org) -> None:
    assert a.get("/agents/shared-bot").status_code == 404


def agent_series(s: Scene, a: Org) -> None:
    assert a.get("/agents/shared-bot/series").status_code == 404


def org_series(s: Scene, a: Org) -> None:
    series = a.get("/series").json()
    assert series["events"] == [] and series["events_count"] == 0
    assert not any(series["totals"].values()), series["totals"]


def put_checkpoint(s: Scene, a: Org) -> None:
    assert a.http.put("/checkpoints/shared", json={"state": "A's"}).json()["state"] == "A's"


def get_checkpoint(s: Scene, a: Org) -> None:
    assert a.get("/checkpoints/shared").status_code == 404


def create_webhook(s: Scene, a: Org) -> None:
    created = a.http.post("/webhooks", json={**B_HOOK, "name": "A's"}).json()
    assert created["organization_id"] != "org_b" and created["secret"].startswith("whsec_")
    [mine] = a.get("/webhooks").json()["data"]
    assert mine["id"] == created["id"] != s.b_webhook
    # A's kill of a target named like B's is queued for A's webhook alone
    assert a.http.post("/kill-switch/kill", json=B_TARGET).status_code == 200
    log = a.get(f"/webhooks/{created['id']}/deliveries").json()
    assert [d["event"] for d in log["data"]] == ["kill"]


def list_webhooks(s: Scene, a: Org) -> None:
    assert empty(a.get("/webhooks"))


def delete_webhook(s: Scene, a: Org) -> None:
    answer = a.http.delete(f"/webhooks/{s.b_webhook}")
    assert answer.status_code == 404 and answer.json()["field"] == "webhook_id"


def send_test_webhook(s: Scene, a: Org) -> None:
    assert a.http.post(f"/webhooks/{s.b_webhook}/test").status_code == 404


def webhook_deliveries(s: Scene, a: Org) -> None:
    assert a.get(f"/webhooks/{s.b_webhook}/deliveries").status_code == 404


def start_drill(s: Scene, a: Org) -> None:
    """A drills a target named like B's, from a stream announcing B's instance and agent ids:
    B's drill never reaches A's stream, and A's asks A's instance alone."""
    events: list[tuple[str, Any]] = []
    params = {"drills": "1", "instance_id": "shared-instance", "agent_id": "shared-bot"}

    def read() -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=10.0)) as client, connect_sse(
            client, "GET", f"{a.url}/api/v1/kill-switch/stream", headers=bearer(a.key),
            params=params,
        ) as source:  # fmt: skip
            for event in source.iter_sse():
                if event.data:
                    events.append((event.event, json.loads(event.data)))
                if len(events) >= 2:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    eventually(lambda: events, 10)
    b_drill = s.b.http.post("/drills", json={**B_TARGET, "timeout": 0.2}).json()

    def drilled() -> dict[str, Any] | None:  # once A's streaming instance is recorded
        drill = a.http.post("/drills", json={**B_TARGET, "timeout": 0.2}).json()
        return drill if drill["live"] else None  # a drill of no live instance is not sent

    mine = eventually(drilled, 10, 0.1)
    reader.join(10)
    assert [kind for kind, _ in events] == ["snapshot", "drill"], events
    assert events[1][1]["id"] == mine["id"] != b_drill["id"]
    assert (mine["live"], mine["not_answering"]) == (1, ["shared-instance"])  # A's own
    s.b_before = s.b_view()  # B's own drill above is B's


def list_drills(s: Scene, a: Org) -> None:
    assert empty(a.get("/drills"))
    assert empty(a.get("/drills", target_type="agent", target_id="shared-bot"))


def acknowledge_drill(s: Scene, a: Org) -> None:
    body = {"instance_id": "shared-instance", "agent_id": "shared-bot"}
    answer = a.http.post(f"/drills/{s.b_drill}/ack", json=body)
    assert answer.status_code == 404 and answer.json()["field"] == "drill_id"


def openapi(s: Scene, a: Org) -> None:
    text = a.get("/openapi.json").text
    assert "org_b" not in text and "shared-bot" not in text


def metrics(s: Scene, a: Org) -> None:
    """A's metrics count A's own only: zeros, where B has a kill, an instance, an intervention."""
    answer = httpx.get(f"{a.url}/metrics", headers=bearer(a.key))
    assert answer.status_code == 200 and "org_b" not in answer.text
    samples = parse(answer.text)
    for name in (
        "agentguard_kills_active",
        "agentguard_instances",
        "agentguard_streams_open",
        "agentguard_interventions_total",
        "agentguard_ack_latency_seconds_count",
    ):
        assert set(samples[name].values()) == {0}, name  # fmt: skip


def page(s: Scene, a: Org) -> None:
    for path in ("/", "/kill-switch", "/kill-switch/static/console.js",
                 "/kill-switch/static/console.css"):  # fmt: skip
        answer = httpx.get(f"{a.url}{path}", headers=bearer(a.key))
        assert answer.status_code in (200, 307) and "org_b" not in answer.text


def session(s: Scene, a: Org) -> None:
    with httpx.Client(base_url=a.url) as browser:
        signed_in = browser.post("/kill-switch/session", json={"api_key": a.key}).json()
        assert signed_in["organization_id"] != "org_b"
        assert browser.get("/kill-switch/session").json()["organization_id"] != "org_b"
        assert empty(browser.get("/api/v1/kill-switch/active"))
        assert empty(browser.get("/api/v1/interventions"))
        csrf = {"X-CSRF-Token": signed_in["csrf_token"]}
        assert (
            browser.post("/api/v1/kill-switch/revive", json=B_TARGET, headers=csrf).status_code
            == 404
        )
        assert browser.delete("/kill-switch/session", headers=csrf).status_code == 204


API = "/api/v1"
PROBES: dict[tuple[str, str], Callable[[Scene, Org], None]] = {
    ("POST", f"{API}/kill-switch/kill"): kill,
    ("POST", f"{API}/kill-switch/revive"): revive,
    ("GET", f"{API}/kill-switch/revive-requests"): revive_requests,
    ("POST", f"{API}/kill-switch/revive-requests/{{request_id}}/approve"): approve_revive,
    ("POST", f"{API}/kill-switch/revive-requests/{{request_id}}/reject"): reject_revive,
    ("GET", f"{API}/kill-switch/check"): check,
    ("GET", f"{API}/kill-switch/state"): state,
    ("GET", f"{API}/kill-switch/active"): active,
    ("GET", f"{API}/kill-switch/stream"): stream,
    ("POST", f"{API}/keys"): create_key,
    ("GET", f"{API}/keys"): list_keys,
    ("DELETE", f"{API}/keys/{{key_id}}"): revoke_key,
    ("GET", f"{API}/audit"): audit,
    ("POST", f"{API}/interventions"): report_interventions,
    ("GET", f"{API}/interventions"): interventions,
    ("GET", f"{API}/interventions/counts"): counts,
    ("POST", f"{API}/interventions/"): report_sentinel_intervention,
    ("POST", f"{API}/ingest"): ingest_sentinel_ledger,
    ("POST", f"{API}/heartbeats"): heartbeat,
    ("POST", f"{API}/runs/{{run_id}}/finish"): finish_run,
    ("POST", f"{API}/kill-switch/ack"): ack,
    ("POST", f"{API}/kill-switch/acks"): ack_batch,
    ("GET", f"{API}/kill-switch/acks"): acks,
    ("GET", f"{API}/agents"): agents,
    ("GET", f"{API}/agents/{{agent_id}}"): agent,
    ("GET", f"{API}/agents/{{agent_id}}/series"): agent_series,
    ("GET", f"{API}/series"): org_series,
    ("PUT", f"{API}/checkpoints/{{key}}"): put_checkpoint,
    ("GET", f"{API}/checkpoints/{{key}}"): get_checkpoint,
    ("POST", f"{API}/webhooks"): create_webhook,
    ("GET", f"{API}/webhooks"): list_webhooks,
    ("DELETE", f"{API}/webhooks/{{webhook_id}}"): delete_webhook,
    ("POST", f"{API}/webhooks/{{webhook_id}}/test"): send_test_webhook,
    ("GET", f"{API}/webhooks/{{webhook_id}}/deliveries"): webhook_deliveries,
    ("POST", f"{API}/drills"): start_drill,
    ("GET", f"{API}/drills"): list_drills,
    ("POST", f"{API}/drills/{{drill_id}}/ack"): acknowledge_drill,
    ("GET", f"{API}/openapi.json"): openapi,
    ("GET", "/metrics"): metrics,
    ("GET", "/"): page,
    ("GET", "/kill-switch"): page,
    ("GET", "/kill-switch/static/{name}"): page,
    ("GET", "/kill-switch/session"): session,
    ("POST", "/kill-switch/session"): session,
    ("DELETE", "/kill-switch/session"): session,
}


def registered_routes(server: KillSwitchServer) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the server registers (HEAD goes with GET)."""
    found = set()
    for route in server.starlette.routes:
        assert isinstance(route, Route), f"an unexpected kind of route: {route!r}"
        found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return found


def test_every_route_keeps_organizations_apart(
    database_url: str,
    make_server: Callable[..., KillSwitchServer],
    start_uvicorn: Callable[..., Uvicorn],
) -> None:
    keys = make_server(database_url)
    missing = registered_routes(keys) - set(PROBES)
    assert not missing, f"routes without an isolation probe: {sorted(missing)}"
    scene = Scene(start_uvicorn(database_url), keys)
    for (method, path), probe in PROBES.items():
        probe(scene, scene.a())
        assert scene.b_view() == scene.b_before, f"{method} {path} by org A changed org B"
