"""``POST /kill-switch/acks``: one request acknowledges for many instances, all or none.

A real server (uvicorn) on SQLite and PostgreSQL. A batch is the single acknowledgement many
times over: every instance in it passes the same agent-key binding check, and one refused
instance (or version ahead) refuses the whole batch, leaving nothing of it stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import Process

ACKS = "/kill-switch/acks"


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/v1", headers=bearer(token), timeout=10)


def ack(instance_id: str, version: int, agent_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"instance_id": instance_id, "version": version}
    if agent_id is not None:
        body["agent_id"] = agent_id
    return body


def acked(admin: httpx.Client, agent_id: str) -> dict[str, bool]:
    status = admin.get(ACKS, params={"target_type": "agent", "target_id": agent_id}).json()
    return {i["instance_id"]: i["acknowledged"] for i in status["instances"]}


@pytest.fixture
def scene(
    database_url: str,
    make_server: Callable[..., KillSwitchServer],
    start_uvicorn: Callable[..., Process],
) -> tuple[KillSwitchServer, str]:
    keys = make_server(database_url)
    return keys, start_uvicorn(database_url).url


def test_one_request_acknowledges_for_every_instance_in_it(
    scene: tuple[KillSwitchServer, str],
) -> None:
    keys, url = scene
    admin = client(url, keys.create_key("org_a", owner="usr_ops", scopes=["admin"]))
    agent = client(url, keys.create_key("org_a", owner="bot", scopes=["agent"], agents=["bot"]))
    for i in range(3):  # live instances of bot, before its kill
        assert agent.post("/kill-switch/ack", json=ack(f"bot-{i}", 0, "bot")).is_success
    assert admin.post("/kill-switch/kill", json={"target_type": "agent", "target_id": "bot"})
    version = admin.get("/kill-switch/state").json()["version"]
    assert acked(admin, "bot") == {"bot-0": False, "bot-1": False, "bot-2": False}

    batch = {"acks": [ack(f"bot-{i}", version, "bot") for i in range(3)]}
    answer = agent.post(ACKS, json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"acknowledged": 3, "each": [1, 1, 1]}
    assert acked(admin, "bot") == {"bot-0": True, "bot-1": True, "bot-2": True}
    # Again: nothing new. The single acknowledgement keeps its shape and answer.
    assert agent.post(ACKS, json=batch).json() == {"acknowledged": 0, "each": [0, 0, 0]}
    single = agent.post("/kill-switch/ack", json=ack("bot-0", version, "bot"))
    assert single.json() == {"acknowledged": 0}


def test_a_batch_naming_another_agents_instance_is_refused_whole(
    scene: tuple[KillSwitchServer, str],
) -> None:
    keys, url = scene
    admin = client(url, keys.create_key("org_a", owner="usr_ops", scopes=["admin"]))
    a = client(url, keys.create_key("org_a", owner="a", scopes=["agent"], agents=["agent-a"]))
    b = client(url, keys.create_key("org_a", owner="b", scopes=["agent"], agents=["agent-b"]))
    assert b.post("/kill-switch/ack", json=ack("b-1", 0, "agent-b")).is_success
    assert a.post("/kill-switch/ack", json=ack("a-1", 0, "agent-a")).is_success
    tool = {"target_type": "tool", "target_id": "send_email"}  # applies to every instance
    assert admin.post("/kill-switch/kill", json=tool).is_success
    version = admin.get("/kill-switch/state").json()["version"]
    before = admin.get(ACKS, params=tool).json()
    assert before["acknowledged"] == 0

    # B's instance, claimed as agent-a's; B itself named; no agent named: each refused (403),
    # naming the acknowledgement at fault, and A's own instances in the batch not stored.
    for batch, field in (
        ([ack("a-1", version, "agent-a"), ack("b-1", version, "agent-a")], "acks.1.instance_id"),
        ([ack("a-1", version, "agent-a"), ack("b-1", version, "agent-b")], "acks.1.agent_id"),
        ([ack("a-new", version, "agent-a"), ack("b-1", version)], "acks.1.agent_id"),
        ([ack("b-1", version, "agent-a"), ack("a-2", version, "agent-a")], "acks.0.instance_id"),
    ):
        answer = a.post(ACKS, json={"acks": batch})
        assert answer.status_code == 403, answer.text
        assert answer.json()["field"] == field, answer.json()
        assert admin.get(ACKS, params=tool).json() == before
    # No instance of the refused batches was recorded (a-new, a-2 would count as live).
    assert {i["instance_id"] for i in before["instances"]} == {"a-1", "b-1"}
    refusals = admin.get("/audit", params={"action": "ack.refused"}).json()
    assert refusals["count"] == 4
    assert all("none stored" in e["detail"] for e in refusals["data"])

    # The same batch without B's instance goes through; B's own key acknowledges B's.
    assert a.post(ACKS, json={"acks": [ack("a-1", version, "agent-a")]}).json()["each"] == [1]
    assert b.post(ACKS, json={"acks": [ack("b-1", version, "agent-b")]}).json()["each"] == [1]
    assert admin.get(ACKS, params=tool).json()["acknowledged"] == 2


def test_a_batch_with_a_version_ahead_is_refused_whole(
    scene: tuple[KillSwitchServer, str],
) -> None:
    keys, url = scene
    admin = client(url, keys.create_key("org_a", owner="usr_ops", scopes=["admin"]))
    agent = client(url, keys.create_key("org_a", owner="bot", scopes=["agent"], agents=["bot"]))
    assert agent.post("/kill-switch/ack", json=ack("bot-1", 0, "bot")).is_success
    assert admin.post("/kill-switch/kill", json={"target_type": "agent", "target_id": "bot"})
    version = admin.get("/kill-switch/state").json()["version"]
    batch = [ack("bot-1", version, "bot"), ack("bot-2", version + 5, "bot")]
    answer = agent.post(ACKS, json={"acks": batch})
    assert answer.status_code == 409, answer.text
    assert answer.json()["field"] == "acks.1.version"
    assert acked(admin, "bot") == {"bot-1": False}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"acks": []}, "acks"),
        ({"acks": [ack("x", 1)] * 1001}, "acks"),
        ({"acks": [{"instance_id": "x"}]}, "acks.0.version"),
        ({"acks": [ack("x", 1)], "extra": 1}, "extra"),
        (ack("x", 1), "acks"),  # the single shape belongs to /kill-switch/ack
    ],
)
def test_a_malformed_batch_is_refused_naming_the_field(
    scene: tuple[KillSwitchServer, str], body: dict[str, Any], field: str
) -> None:
    keys, url = scene
    agent = client(url, keys.create_key("org_a", owner="bot", scopes=["agent"], agents=["*"]))
    answer = agent.post(ACKS, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field, answer.json()
