"""Drills and the guards that answer them (or cannot), against a real server process.

- A stream-mode guard rehearses the drill on its kill index and answers: nothing of its kill
  state moves (version, revision, tables), no call is refused, its stream is not resynced.
- A stream that does not ask for drills (an older guard, the console, ``agentguard tail``)
  never gets a drill event, so no client that does not know the event can trip on it.
- A poll-mode guard cannot answer: the drill names it as not answering.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from agentguard import Guard, scope
from agentguard.remote.source import RemoteSource
from support import eventually
from support.api import bearer
from support.live import Live


@pytest.fixture
def guards() -> Iterator[list[Guard]]:
    made: list[Guard] = []
    yield made
    for guard in made:
        guard.close()


def drill(live: Live, target_id: str = "bot", timeout: float = 5.0) -> dict[str, Any]:
    body = {"target_type": "agent", "target_id": target_id, "timeout": timeout}
    answer = live.post("/drills", **body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_stream_guard_answers_a_drill_and_its_kill_state_does_not_move(
    live: Live, guards: list[Guard]
) -> None:
    guard = Guard(live.url, api_key=live.agent, agent_id="bot", instance_id="vm-1")
    guards.append(guard)
    assert guard.wait_until_synced(10)
    source = guard.source
    assert isinstance(source, RemoteSource)
    index = source.index
    before = (index.version, index.revision, index.active(), source.resyncs)

    @guard.guarded_action(name="send_email")
    def send_email() -> str:
        return "sent"

    # The instance is live once its stream is recorded; a drill before then asks nobody.
    result = eventually(lambda: (d := drill(live))["live"] and d, 10, 0.1)
    assert (result["status"], result["acknowledged"], result["not_answering"]) == ("armed", 1, [])
    with scope(agent_id="bot"):
        assert send_email() == "sent"
    assert (index.version, index.revision, index.active(), source.resyncs) == before
    assert guard.counts("agent", "bot").refused == 0


def test_only_a_stream_that_asks_for_drills_gets_them(live: Live) -> None:
    """Two streams of one instance, one asking for drills and one not (as an older guard
    opens it): the drill goes to the first alone, with no SSE id."""
    seen: dict[str, list[tuple[str, str, Any]]] = {"asks": [], "older": []}

    def read(name: str, params: dict[str, str], stop: threading.Event) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=10.0)) as client, connect_sse(
            client, "GET", f"{live.url}/api/v1/kill-switch/stream",
            headers=bearer(live.agent), params=params,
        ) as source:  # fmt: skip
            try:
                for event in source.iter_sse():
                    if event.data:
                        seen[name].append((event.event, event.id, json.loads(event.data)))
                    if stop.is_set():
                        return
            except httpx.ReadTimeout:
                return

    identity = {"instance_id": "vm-2", "agent_id": "bot"}
    stop = threading.Event()
    readers = [
        threading.Thread(target=read, args=("asks", {**identity, "drills": "1"}, stop)),
        threading.Thread(target=read, args=("older", identity, stop)),
    ]
    for reader in readers:
        reader.start()
    eventually(lambda: seen["asks"] and seen["older"], 10)
    result = eventually(lambda: (d := drill(live, timeout=0.5))["live"] and d, 10, 0.1)
    assert live.kill("other-bot").status_code == 200  # a change after it, for both streams
    eventually(lambda: [e for e, _, _ in seen["older"]] == ["snapshot", "kill"], 10)
    stop.set()
    for reader in readers:
        reader.join(10)
    kinds = [e for e, _, _ in seen["asks"]]
    assert kinds == ["snapshot", "drill", "kill"], kinds
    _, drill_id, data = seen["asks"][1]
    assert data["id"] == result["id"] and drill_id in (None, "", seen["asks"][0][1])
    assert (data["target_type"], data["target_id"]) == ("agent", "bot")
    # Nobody answered (these streams are not guards): the drill names the instance.
    assert result["status"] == "failed" and result["not_answering"] == ["vm-2"]


def test_a_polling_guard_cannot_answer_and_is_named(live: Live, guards: list[Guard]) -> None:
    streaming = Guard(live.url, api_key=live.agent, agent_id="bot", instance_id="vm-s")
    polling = Guard(live.url, api_key=live.agent, agent_id="bot", instance_id="vm-p", mode="poll")
    guards += [streaming, polling]
    assert streaming.wait_until_synced(10) and polling.wait_until_synced(10)
    polling.start_heartbeat(interval=1.0)  # live by its heartbeats
    # Once both instances are recorded (the stream's at once, the poller's by its heartbeat).
    result = eventually(lambda: (d := drill(live, timeout=1.0))["live"] == 2 and d, 15, 0.3)
    assert (result["acknowledged"], result["not_answering"]) == (1, ["vm-p"])
    assert result["status"] == "failed"
