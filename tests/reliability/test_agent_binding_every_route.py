"""A key bound to agent A acting for agent B, on every agent-writable route, over real HTTP.

The routes come from the server's Endpoint table (every endpoint an agent key may call that
writes: permission ``report``; and every endpoint with an agent in its path, which agent keys
may not read at all) and the change stream (the identity it announces); a new one without a
probe here fails the test. Agent B has an instance, cost, a kill, acknowledgements,
interventions and a checkpoint; each probe runs as a key bound to agent A (and one bound to a
prefix that does not cover B) and must be refused, naming the field, or land in A's own
namespace, and leave everything of B's as it was, the events queued for a webhook included
(what an agent reports can page someone). Runs on SQLite and PostgreSQL, with a server budget
rule (so forged cost would kill B).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from agentguard.server import KillSwitchServer
from agentguard.server.api.endpoints import ENDPOINTS
from support.api import bearer
from support.reliability import Uvicorn

B = "agent-b"
B_INSTANCE = "b-instance"
B_RUN = "b-run"
CHECKPOINT = "/checkpoints/b.replica-0"


def beat(
    agent_id: str | None, instance_id: str, cost: float = 0.0, version: int = 0, cancelled: int = 0
) -> dict:
    body: dict[str, Any] = {"instance_id": instance_id, "interval": 10, "executed": 1,
                            "refused": 0, "failed": 0, "cancelled": cancelled, "cost_usd": cost,
                            "version": version}  # fmt: skip
    if agent_id is not None:
        body["agent_id"] = agent_id
    return body


class Scene:
    """Agent B's data everywhere, and keys bound to other agents."""

    def __init__(self, url: str, server: KillSwitchServer) -> None:
        self.url = url

        def client(token: str) -> httpx.Client:
            return httpx.Client(base_url=f"{url}/api/v1", headers=bearer(token), timeout=10)

        self.admin = client(server.create_key("org_a", owner="usr_admin", scopes=["admin"]))
        # A webhook of every event: what an agent reports can page someone (fail_closed,
        # rule.observed), so nothing forged about B may reach it.
        events = ["kill", "revive", "rule.tripped", "rule.observed", "ack.timeout", "fail_closed"]
        hook = {"url": "https://hooks.example.com/pager", "events": events}
        self.webhook = self.admin.post("/webhooks", json=hook).json()["id"]
        self.b = client(server.create_key("org_a", owner="usr_b", scopes=["agent"], agents=[B]))
        self.attackers = {
            "exact": server.create_key(
                "org_a", owner="usr_x", scopes=["agent"], agents=["agent-a"]
            ),
            "prefix": server.create_key(
                "org_a", owner="usr_y", scopes=["agent"], agents=["agent-a*", "agent-bb*"]
            ),
        }
        first = {**beat(B, B_INSTANCE, cost=5), "run_id": B_RUN}
        assert self.b.post("/heartbeats", json=first).is_success
        # B's run is killed (B itself is not, so forged cost would show as a rule's kill of B),
        # until it ends (so finishing it, or its instances' exit, would end the kill).
        kill = {"target_type": "run", "target_id": B_RUN, "reason": "B's", "until": "run_end"}
        assert self.admin.post("/kill-switch/kill", json=kill).is_success
        self.version = self.admin.get("/kill-switch/state").json()["version"]
        iv = {"id": "iv-b", "action": "send_email", "target_type": "agent", "target_id": B,
              "agent_id": B, "occurred_at": datetime.now(timezone.utc).isoformat()}  # fmt: skip
        assert self.b.post("/interventions", json={"interventions": [iv]}).is_success
        assert self.b.put(CHECKPOINT, json={"state": {"next": 40}}).is_success
        # A drill of B: its heartbeat-only instance cannot answer; nobody may answer for it.
        drill = {"target_type": "agent", "target_id": B, "timeout": 0.2}
        self.drill = self.admin.post("/drills", json=drill).json()["id"]
        # A revive of B's run waiting for approval (in-process: this server has no rules).
        self.revive_request = server.store.request_revive(
            "org_a", "run", B_RUN, actor="usr_admin", person="usr_admin", people=2,
            ttl=timedelta(hours=1),
        ).id  # fmt: skip
        self.before = self.view()

    def view(self) -> dict[str, Any]:
        """Everything of B's (its instance's last_seen left out)."""
        a = self.admin
        agent = a.get(f"/agents/{B}").json()
        acks = a.get("/kill-switch/acks", params={"target_type": "run", "target_id": B_RUN}).json()
        return {
            "instances": [
                (i["instance_id"], i["cost_usd"], i["version"], i["executed"], i["cancelled"])
                for i in agent["instances"]
            ],  # fmt: skip
            "cost": agent["cost_usd"],
            "acks": [(i["instance_id"], i["acknowledged"]) for i in acks["instances"]],
            "active": [k["target_id"] for k in a.get("/kill-switch/active").json()["data"]],
            "interventions": a.get("/interventions").json()["count"],
            "checkpoint": self.b.get(CHECKPOINT).json()["state"],
            "drills": [
                (d["id"], d["acknowledged"], d["not_answering"])
                for d in a.get("/drills").json()["data"]
            ],
            "revive requests": a.get(
                "/kill-switch/revive-requests", params={"status": "all"}
            ).json()["data"],
            "webhook events": sorted(
                (d["event"], d["subject"])
                for d in a.get(f"/webhooks/{self.webhook}/deliveries").json()["data"]
            ),
        }


def refused(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["field"] == field, answer.json()


# -- one probe per agent-writable route: what a key bound to another agent tries ---------------


def heartbeat(s: Scene, c: httpx.Client) -> None:
    """Heartbeats, and the cost they carry: for B, for B's instance, or for no agent."""
    refused(c.post("/heartbeats", json=beat(B, "x-1", cost=1e6)), "agent_id")
    refused(c.post("/heartbeats", json=beat("agent-a", B_INSTANCE, cost=1e6)), "instance_id")
    refused(c.post("/heartbeats", json=beat(None, B_INSTANCE, cost=1e6)), "agent_id")
    # Nor the count of its calls stopped by kills.
    refused(c.post("/heartbeats", json=beat("agent-a", B_INSTANCE, cancelled=99)), "instance_id")
    # A version in a heartbeat acknowledges kills: never for B's instance.
    refused(c.post("/heartbeats", json=beat("agent-a", B_INSTANCE, version=s.version)),
            "instance_id")  # fmt: skip


def acknowledge(s: Scene, c: httpx.Client) -> None:
    for agent, field in ((None, "agent_id"), (B, "agent_id"), ("agent-a", "instance_id")):
        body: dict[str, Any] = {"instance_id": B_INSTANCE, "version": s.version}
        if agent is not None:
            body["agent_id"] = agent
        refused(c.post("/kill-switch/ack", json=body), field)


def acknowledge_drill(s: Scene, c: httpx.Client) -> None:
    """An answer to B's drill for B's instance: as B, as no agent, or as its own agent."""
    for agent, field in ((None, "agent_id"), (B, "agent_id"), ("agent-a", "instance_id")):
        body: dict[str, Any] = {"instance_id": B_INSTANCE}
        if agent is not None:
            body["agent_id"] = agent
        refused(c.post(f"/drills/{s.drill}/ack", json=body), field)


def acknowledge_batch(s: Scene, c: httpx.Client) -> None:
    """A batch for the key's own agent with B's instance in it: refused whole, as one ack."""
    own = {"instance_id": "a-instance", "version": s.version, "agent_id": "agent-a"}
    for agent, field in ((None, "agent_id"), (B, "agent_id"), ("agent-a", "instance_id")):
        body: dict[str, Any] = {"instance_id": B_INSTANCE, "version": s.version}
        if agent is not None:
            body["agent_id"] = agent
        refused(c.post("/kill-switch/acks", json={"acks": [own, body]}), f"acks.1.{field}")


def report_interventions(s: Scene, c: httpx.Client) -> None:
    now = datetime.now(timezone.utc).isoformat()
    own = {"id": "iv-own", "action": "send_email", "target_type": "tool",
           "target_id": "send_email", "agent_id": "agent-a", "occurred_at": now}  # fmt: skip
    as_b = {**own, "id": "iv-as-b", "agent_id": B}
    against_b = {**own, "id": "iv-against-b", "target_type": "agent", "target_id": B,
                 "type": "OBSERVED", "killed_by": "rule:fleet-budget"}  # fmt: skip
    stopped_b = {**own, "id": "iv-stopped-b", "agent_id": B, "type": "CANCELLED",
                 "ran_for_ms": 1500.0}  # fmt: skip
    # A refusal for want of kill state, blamed on B's instance: it would page as fail_closed.
    b_failing = {**own, "id": "iv-b-failing", "type": "UNAVAILABLE", "agent_id": B,
                 "instance_id": B_INSTANCE}  # fmt: skip
    refused(c.post("/interventions", json={"interventions": [own, b_failing]}),
            "interventions.1.agent_id")  # fmt: skip
    refused(c.post("/interventions", json={"interventions": [own, as_b]}),
            "interventions.1.agent_id")  # fmt: skip
    refused(c.post("/interventions", json={"interventions": [own, against_b]}),
            "interventions.1.target_id")  # fmt: skip
    refused(c.post("/interventions", json={"interventions": [own, stopped_b]}),
            "interventions.1.agent_id")  # fmt: skip


def sentinel_record(agent_id: str | None) -> dict[str, Any]:
    record = {"intervention_type": "hard_block", "outcome": "blocked", "action_name": "send_email",
              "run_id": B_RUN, "timestamp": datetime.now(timezone.utc).isoformat()}  # fmt: skip
    return record if agent_id is None else {**record, "agent_id": agent_id}


def report_sentinel_intervention(s: Scene, c: httpx.Client) -> None:
    """An AgentSentinel record for B: in its body, in its header, or naming no agent."""
    refused(c.post("/interventions/", json=sentinel_record(B)), "agent_id")
    refused(c.post("/interventions/", json=sentinel_record(None),
                   headers={"X-Sentinel-Agent-Id": B}), "X-Sentinel-Agent-Id")  # fmt: skip
    refused(c.post("/interventions/", json=sentinel_record("agent-a"),
                   headers={"X-Sentinel-Agent-Id": B}), "X-Sentinel-Agent-Id")  # fmt: skip
    refused(c.post("/interventions/", json=sentinel_record(None)), "agent_id")


def ingest_sentinel_ledger(s: Scene, c: httpx.Client) -> None:
    """An AgentSentinel ledger spending for B (which the budget rule would kill for), in an
    entry, in the batch, in the header, or naming no agent; and one into B's instance."""
    now = datetime.now(timezone.utc).isoformat()

    def entry(n: int, **ids: str) -> dict[str, Any]:
        return {"id": f"e-{n}", "timestamp": now, "action": "send_email", "cost_usd": 1e6,
                "duration_ms": 1, "outcome": "success", **ids}  # fmt: skip

    # B reports, as its own instance, the id agent A's run "r-taken" would have.
    taken = {"instance_id": "agentsentinel:agent-a:r-taken", "interval": 10, "executed": 0,
             "refused": 0, "failed": 0, "cost_usd": 0, "version": 0, "agent_id": B}  # fmt: skip
    assert s.b.post("/heartbeats", json=taken).is_success
    s.before = s.view()  # B's own doing
    own = entry(0, agent_id="agent-a")
    for body, headers, field in (
        ({"run_id": "r", "entries": [own, entry(1, agent_id=B)]}, {}, "entries.1.agent_id"),
        ({"run_id": "r", "agent_id": B, "entries": [entry(2)]}, {}, "agent_id"),
        ({"run_id": "r", "agent_id": B, "entries": [own]}, {}, "agent_id"),
        ({"run_id": "r", "entries": [entry(3)]}, {"X-Sentinel-Agent-Id": B}, "X-Sentinel-Agent-Id"),
        ({"run_id": "r", "entries": [own]}, {"X-Sentinel-Agent-Id": B}, "X-Sentinel-Agent-Id"),
        ({"run_id": "r", "entries": [entry(4)]}, {}, "agent_id"),
    ):
        refused(c.post("/ingest", json=body, headers=headers), field)
    refused(c.post("/ingest", json={"run_id": "r-taken", "entries": [own]}), "run_id")


def put_checkpoint(s: Scene, c: httpx.Client) -> None:
    written = c.put(CHECKPOINT, json={"state": "overwritten"})
    assert written.status_code == 200 and written.json()["state"] == "overwritten"
    assert c.get(CHECKPOINT).json()["state"] == "overwritten"  # in its own namespace


def get_checkpoint(s: Scene, c: httpx.Client) -> None:
    answer = c.get("/checkpoints/b.replica-0")
    assert answer.status_code == 404 or answer.json()["state"] != {"next": 40}


def stream(s: Scene, c: httpx.Client) -> None:
    """The identity a stream announces: B, or B's instance."""
    for params, field in (
        ({"instance_id": "x-9", "agent_id": B}, "agent_id"),
        ({"instance_id": B_INSTANCE, "agent_id": "agent-a"}, "instance_id"),
    ):
        with c.stream("GET", "/kill-switch/stream", params=params) as answer:
            assert answer.status_code == 403
            answer.read()
            assert answer.json()["field"] == field


def finish_run(s: Scene, c: httpx.Client) -> None:
    """B's run finished (which would end its kill), or B's instance exiting from it."""
    refused(c.post(f"/runs/{B_RUN}/finish"), "run_id")
    exit_b = {**beat("agent-a", B_INSTANCE), "run_id": B_RUN, "status": "exited"}
    refused(c.post("/heartbeats", json=exit_b), "instance_id")


# -- routes that name an agent and read its data: an agent key reads none, its own included ----


def scope_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["required_scope"] == "operator", answer.json()


def get_agent(s: Scene, c: httpx.Client) -> None:
    scope_refused(c.get(f"/agents/{B}"))


def agent_series(s: Scene, c: httpx.Client) -> None:
    scope_refused(c.get(f"/agents/{B}/series"))
    scope_refused(c.get("/agents/agent-a/series"))


def revive_requests(s: Scene, c: httpx.Client) -> None:
    """Freeing B (or itself): no agent key revives, asks for, approves or rejects a revive."""
    revive = {"target_type": "run", "target_id": B_RUN, "reason": "forged"}
    scope_refused(c.post("/kill-switch/revive", json=revive))
    for verb in ("approve", "reject"):
        scope_refused(c.post(f"/kill-switch/revive-requests/{s.revive_request}/{verb}", json={}))
    scope_refused(c.get("/kill-switch/revive-requests"))


PROBES: dict[str, Callable[[Scene, httpx.Client], None]] = {
    "heartbeat": heartbeat,
    "acknowledge": acknowledge,
    "acknowledge_drill": acknowledge_drill,
    "acknowledge_batch": acknowledge_batch,
    "report_interventions": report_interventions,
    "put_checkpoint": put_checkpoint,
    "get_checkpoint": get_checkpoint,
    "stream": stream,
    "get_agent": get_agent,
    "agent_series": agent_series,
    "report_sentinel_intervention": report_sentinel_intervention,
    "ingest_sentinel_ledger": ingest_sentinel_ledger,
    "finish_run": finish_run,
    "revive_requests": revive_requests,  # not agent-writable: refused to every agent key
}


def agent_writable() -> set[str]:
    """Every operation an agent key may call that writes or announces something."""
    return {e.operation_id for e in ENDPOINTS if e.permission == "report"} | {"stream"}


def naming_an_agent() -> set[str]:
    """Every operation with an agent in its path."""
    return {e.operation_id for e in ENDPOINTS if "{agent_id}" in e.path}


def test_a_key_bound_to_one_agent_never_acts_for_another(
    database_url: str,
    make_server: Callable[..., KillSwitchServer],
    start_uvicorn: Callable[..., Uvicorn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = (agent_writable() | naming_an_agent()) - set(PROBES)
    assert not missing, f"routes without a binding probe: {sorted(missing)}"
    monkeypatch.setenv("AGENTGUARD_RULES", "budget:name=fleet-budget,limit_usd=100,window=3600")
    keys = make_server(database_url)
    server = start_uvicorn(database_url)
    scene = Scene(server.url, keys)
    assert scene.before["acks"] == [(B_INSTANCE, False)] and scene.before["active"] == [B_RUN]
    for name, token in scene.attackers.items():
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(token)) as c:
            for operation, probe in PROBES.items():
                probe(scene, c)
                assert scene.view() == scene.before, f"{operation} by a {name} key changed B's"
    for operation in naming_an_agent():  # B's own key reads no agent's data either
        PROBES[operation](scene, scene.b)
    rules = scene.admin.get("/audit", params={"action": "kill"}).json()["data"]
    assert not [e for e in rules if e["actor"].startswith("rule:")], "forged cost tripped a rule"
    refusals = scene.admin.get("/audit", params={"action": "ack.refused"}).json()["count"]
    assert refusals == 3 * 3 * len(scene.attackers)  # of kills: single acks, batches; drills
