"""A process's remote guards acknowledge together: one thread, one request per round.

Real server processes (SQLite and PostgreSQL); requests are counted by the transport the
guards share, which sends them over loopback as any other.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentguard import Guard
from agentguard.remote import RemoteSource
from agentguard.scope import Scope
from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer
from support.live import Live

TOOL = {"target_type": "tool", "target_id": "send_email"}  # applies to every instance


class CountingTransport(httpx.HTTPTransport):
    """The HTTP transport, counting the requests sent through it by method and path."""

    def __init__(self) -> None:
        super().__init__(limits=httpx.Limits(max_connections=None))
        self.sent: Counter[tuple[str, str]] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent[request.method, request.url.path] += 1
        return super().handle_request(request)


@pytest.fixture
def guards() -> Iterator[list[Guard]]:
    made: list[Guard] = []
    yield made
    for guard in made:
        guard.close()


def start(
    made: list[Guard], url: str, key: str, transport: httpx.BaseTransport, instance: str, agent: str
) -> RemoteSource:
    source = RemoteSource(
        url, api_key=key, transport=transport, instance_id=instance, identity=Scope(agent)
    )
    made.append(Guard(source, start_wait=5, max_staleness=300))
    return source


def acked(live: Live) -> dict[str, bool]:
    body = httpx.get(
        f"{live.url}/api/v1/kill-switch/acks", params=TOOL, headers=bearer(live.admin)
    ).json()
    return {i["instance_id"]: i["acknowledged"] for i in body["instances"]}


def ack_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "agentguard-ack")


def test_a_processs_guards_acknowledge_a_kill_in_one_request(
    live: Live, guards: list[Guard]
) -> None:
    transport = CountingTransport()
    sources = [start(guards, live.url, live.agent, transport, f"bot-{i}", "bot") for i in range(30)]
    assert ack_threads() == 1  # one for the thirty guards, not thirty
    assert live.post("/kill-switch/kill", **TOOL).is_success
    eventually(lambda: acked(live) == {f"bot-{i}": True for i in range(30)}, 10)
    version = httpx.get(f"{live.url}/api/v1/kill-switch/state", headers=bearer(live.admin)).json()[
        "version"
    ]
    eventually(lambda: all(s.acknowledged == version for s in sources), 5)
    batches = transport.sent["POST", "/api/v1/kill-switch/acks"]
    singles = transport.sent["POST", "/api/v1/kill-switch/ack"]
    # Thirty acknowledgements in a few requests (the kill reaches the guards over a few
    # milliseconds: at most a request or two more for stragglers), none of them single.
    assert 1 <= batches <= 5 and singles <= 2, transport.sent
    for guard in guards:
        guard.close()
    assert ack_threads() == 0  # the last guard out ended it


def test_a_refused_instance_does_not_hold_back_the_others(live: Live, guards: list[Guard]) -> None:
    keys = KillSwitchServer(live.database_url)
    try:
        bot_key = keys.create_key("org_a", owner="bot", scopes=["agent"], agents=["bot"])
    finally:
        keys.close()
    transport = CountingTransport()
    for i in range(5):
        start(guards, live.url, bot_key, transport, f"bot-{i}", "bot")
    start(guards, live.url, bot_key, transport, "other-1", "bot")
    # Then the instance turns out to be another agent's (the operator says so): the guard's
    # acknowledgement is refused (403), so the batch is refused whole and the others' are
    # sent one by one.
    other = {"instance_id": "other-1", "agent_id": "other", "interval": 10, "executed": 0,
             "refused": 0, "failed": 0, "cost_usd": 0.0, "version": 0}  # fmt: skip
    eventually(lambda: live.post("/heartbeats", **other).is_success, 5)
    assert live.post("/kill-switch/kill", **TOOL).is_success
    want: dict[str, Any] = {f"bot-{i}": True for i in range(5)} | {"other-1": False}
    eventually(lambda: acked(live) == want, 10)
    assert transport.sent["POST", "/api/v1/kill-switch/acks"] >= 1
    refusals = httpx.get(
        f"{live.url}/api/v1/audit", params={"action": "ack.refused"}, headers=bearer(live.admin)
    ).json()
    assert refusals["count"] >= 2  # the batch, and the instance's own acknowledgement


def _child(url: str, key: str, version: int) -> None:
    source = RemoteSource(url, api_key=key, instance_id="child-1", identity=Scope("bot"))
    guard = Guard(source, start_wait=5, max_staleness=300)
    deadline = time.monotonic() + 10
    while source.acknowledged < version and time.monotonic() < deadline:
        time.sleep(0.05)
    guard.close()
    os._exit(0 if source.acknowledged >= version else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_acknowledges_with_a_batcher_of_its_own(
    live: Live, guards: list[Guard]
) -> None:
    parent = RemoteSource(
        live.url, api_key=live.agent, instance_id="parent-1", identity=Scope("bot")
    )
    guards.append(Guard(parent, start_wait=5, max_staleness=300))  # its batcher runs here
    assert live.post("/kill-switch/kill", **TOOL).is_success
    version = httpx.get(f"{live.url}/api/v1/kill-switch/state", headers=bearer(live.admin)).json()[
        "version"
    ]
    eventually(lambda: parent.acknowledged == version, 5)
    child = multiprocessing.get_context("fork").Process(
        target=_child, args=(live.url, live.agent, version)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0  # the child's guard acknowledged, through a thread of its own
    assert acked(live)["child-1"]
