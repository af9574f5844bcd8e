"""Streaming guards leave the fleet when they end: a clean exit is reported (``Guard.close()``,
interpreter exit, SIGTERM) even without heartbeats, and a stream that ends without one marks its
instance gone within a few keep-alives, so ``kill --wait`` waits on live instances only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import Guard
from support import eventually
from support.api import bearer
from support.live import Live
from support.stream_client import StreamReader

COMMAND = [sys.executable, "-m", "agentguard.cli"]


def acks(live: Live, target_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{live.url}/api/v1/kill-switch/acks",
        params={"target_type": "agent", "target_id": target_id},
        headers=bearer(live.admin),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def instance(live: Live, agent_id: str, instance_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{live.url}/api/v1/agents/{agent_id}", headers=bearer(live.admin))
    if response.status_code == 404:
        return None
    found = [i for i in response.json()["instances"] if i["instance_id"] == instance_id]
    return found[0] if found else None


def row(live: Live, instance_id: str) -> dict[str, Any]:
    """An instance as stored (the agents view lists only heartbeating instances)."""
    from sqlalchemy import select

    from agentguard.server.store.database import Database
    from agentguard.server.store.tables import instances

    database = Database(live.database_url)
    try:
        with database.read() as conn:
            found = conn.execute(
                select(instances).where(instances.c.instance_id == instance_id)
            ).first()
    finally:
        database.dispose()
    assert found is not None, instance_id
    return dict(found._mapping)


@pytest.fixture
def guards(live: Live) -> Iterator[Callable[..., Guard]]:
    made: list[Guard] = []

    def make(**options: Any) -> Guard:
        guard = Guard(live.url, api_key=live.agent, **options)
        made.append(guard)
        assert guard.source.wait_until_synced(10)  # type: ignore[attr-defined]
        return guard

    yield make
    for guard in made:
        guard.close()


def test_kill_wait_counts_only_the_guard_still_running(
    live: Live, guards: Callable[..., Guard], tmp_path: Path
) -> None:
    """Two guards of cron-bot, one closed (plus a closed one without an agent id):
    ``agentguard kill --wait`` answers 1/1 at once instead of waiting on the closed ones."""
    running = guards(agent_id="cron-bot")
    with Guard(live.url, api_key=live.agent, agent_id="cron-bot") as finished:
        assert finished.source.wait_until_synced(10)  # type: ignore[attr-defined]
    with Guard(live.url, api_key=live.agent) as anonymous:
        assert anonymous.source.wait_until_synced(10)  # type: ignore[attr-defined]
    assert instance(live, "cron-bot", finished.instance_id)["status"] == "exited"  # type: ignore[index]
    env = {**os.environ, "AGENTGUARD_URL": live.url, "AGENTGUARD_API_KEY": live.admin}
    done = subprocess.run(
        [*COMMAND, "kill", "agent", "cron-bot", "--wait", "--timeout", "8", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["complete"] and (answer["acks"]["acknowledged"], answer["acks"]["live"]) == (1, 1)
    assert [i["instance_id"] for i in answer["acks"]["instances"]] == [running.instance_id]
    assert answer["waited_s"] < 2.0  # one acknowledgement away; before: 8 s, then a failure


def test_a_stream_that_ends_without_a_clean_exit_marks_its_instance_gone(live: Live) -> None:
    params = {"instance_id": "i-vanishing", "agent_id": "mailer"}
    url = live.url
    reader = StreamReader(url, headers=bearer(live.agent), params=params)
    reader.wait_for(lambda e: len(e) >= 1)
    assert live.kill("mailer").status_code == 200
    assert acks(live, "mailer")["live"] == 1
    reader.close()  # the connection drops: no clean exit was reported
    # Gone within a few keep-alives (0.3 s here): no longer waited on.
    eventually(lambda: acks(live, "mailer")["live"] == 0, 5)
    gone = row(live, "i-vanishing")
    assert gone["status"] == "crashed" and "stream ended" in gone["error"]
    back = StreamReader(url, headers=bearer(live.agent), params=params)  # it reconnects
    try:
        back.wait_for(lambda e: len(e) >= 1)
        eventually(lambda: acks(live, "mailer")["live"] == 1, 5)
        again = row(live, "i-vanishing")
        assert again["status"] == "running" and again["error"] is None
    finally:
        back.close()


def test_a_brief_reconnection_is_not_an_exit(live: Live) -> None:
    params = {"instance_id": "i-flaky", "agent_id": "mailer"}
    first = StreamReader(live.url, headers=bearer(live.agent), params=params)
    first.wait_for(lambda e: len(e) >= 1)
    second = StreamReader(live.url, headers=bearer(live.agent), params=params)
    second.wait_for(lambda e: len(e) >= 1)
    first.close()  # one of its two connections ends: it is still connected
    try:
        time.sleep(2)  # proves nothing happens meanwhile: no condition to wait for
        assert row(live, "i-flaky")["status"] == "running"
    finally:
        second.close()


SCRIPT = """
import sys, time
from agentguard import Guard
guard = Guard(sys.argv[1], api_key=sys.argv[2], agent_id="signalled", instance_id=sys.argv[3])
assert guard.source.wait_until_synced(10)
print("ready", flush=True)
if sys.argv[4] == "exit":
    sys.exit(0)  # no close(): the interpreter's exit reports it
time.sleep(60)
"""


@pytest.mark.parametrize("end", ["exit", "sigterm"])
def test_interpreter_exit_and_sigterm_report_a_clean_exit(live: Live, end: str) -> None:
    instance_id = f"i-{end}"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), live.url, live.agent, instance_id, end],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        if end == "sigterm":
            process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    finally:
        process.kill()
    assert code == (0 if end == "exit" else -signal.SIGTERM)
    reported = instance(live, "signalled", instance_id)
    assert reported is not None and reported["status"] == "exited", reported
