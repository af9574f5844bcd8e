"""``guard.start_heartbeat()``: what it reports, in threads and tasks, at exit and on a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, create_model

from agentguard import AgentGuardError, Guard, InvalidInputError, PolicyViolationError
from agentguard.server import KillSwitchServer
from agentguard.server.schemas import HeartbeatIn
from agentguard.sources import HeartbeatsUnsupportedError
from support import eventually


@pytest.fixture
def server() -> Iterator[KillSwitchServer]:
    s = KillSwitchServer()
    s.start()
    yield s
    s.close()


def instances(server: KillSwitchServer, agent_id: str = "bot") -> list[Any]:
    found = server.fleet.agents("default", agent_id)
    return found[0].instances if found else []


def test_a_guard_without_a_server_says_heartbeats_need_one() -> None:
    guard = Guard()
    with pytest.raises(HeartbeatsUnsupportedError, match="heartbeats need a server"):
        guard.start_heartbeat()
    guard.close()


@pytest.mark.parametrize("interval", [0, -1, float("nan"), "10", 86401])
def test_the_interval_is_validated(server: KillSwitchServer, interval: Any) -> None:
    guard = Guard(server)
    with pytest.raises(InvalidInputError) as caught:
        guard.start_heartbeat(interval=interval)
    assert caught.value.field == "interval"
    guard.close()


def test_the_report_carries_counts_cost_version_and_checkpoint(server: KillSwitchServer) -> None:
    guard = Guard(server, agent_id="bot", run_id="run-1")
    calls: list[int] = []
    send = guard.guarded_action(name="send_email")(calls.append)
    send(1)
    send(2)
    guard.report_metric(cost_usd=0.25)
    guard.report_metric(cost_usd=0.5, agent_id="other")
    guard.checkpoint("bot.progress", {"next": 3})
    guard.kill("tool", "delete_all")
    heartbeat = guard.start_heartbeat(interval=60, mission_id="m-1")
    report = heartbeat.report()
    assert report.instance_id == guard.instance_id
    assert (report.agent_id, report.run_id, report.mission_id) == ("bot", "run-1", "m-1")
    assert (report.executed, report.refused, report.failed) == (2, 0, 0)
    assert report.cost_usd == pytest.approx(0.75)  # everything this process reported
    assert (report.version, report.checkpoint, report.interval) == (1, "bot.progress", 60)
    eventually(lambda: heartbeat.sent >= 1)
    (instance,) = instances(server)
    assert (instance.executed, instance.version, instance.run_id) == (2, 1, "run-1")
    with pytest.raises(AgentGuardError, match="already running"):
        guard.start_heartbeat()
    guard.stop_heartbeat()
    (instance,) = instances(server)
    assert (instance.status, instance.health) == ("exited", "exited")
    guard.stop_heartbeat()  # nothing left to stop
    guard.close()


def test_a_kill_is_acknowledged_at_once_by_an_in_process_guard(server: KillSwitchServer) -> None:
    guard = Guard(server, agent_id="bot")
    heartbeat = guard.start_heartbeat(interval=60)
    eventually(lambda: heartbeat.sent == 1)
    server.store.kill("default", "agent", "bot", reason="runaway", actor="usr_ops")
    eventually(lambda: heartbeat.sent == 2)  # sent on the change, not after 60 s
    status = server.fleet.acks("default", "agent", "bot")
    assert status is not None and (status.live, status.acknowledged) == (1, 1)
    assert heartbeat.last_reply is not None and heartbeat.last_reply.killed
    assert heartbeat.last_reply.reason == "runaway"
    guard.close()


def test_the_answer_stops_a_guard_whose_feed_is_behind(tmp_path: Path) -> None:
    """A remote guard that polls rarely still refuses once a heartbeat brings the kill."""
    import uvicorn  # a real HTTP server in a thread: the guard talks HTTP

    from agentguard.server import KillSwitchServer as Server

    server = Server(f"sqlite:///{tmp_path / 'db.sqlite'}")
    server.start()
    token = server.create_key("default", owner="bot", scopes=["agent"], agents=["*"])
    config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning")
    web = uvicorn.Server(config)
    import threading

    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    eventually(lambda: web.started and bool(web.servers))
    port = web.servers[0].sockets[0].getsockname()[1]
    guard = Guard(
        f"http://127.0.0.1:{port}",
        api_key=token,
        mode="poll",
        poll_interval=3600,
        max_staleness=3600,
        agent_id="bot",
    )
    try:
        assert guard.wait_until_synced(10)
        send = guard.guarded_action(name="send_email")(lambda: None)
        send()
        server.store.kill("default", "agent", "bot", reason="runaway", actor="usr_ops")
        send()  # the next poll is an hour away: the guard does not know yet
        heartbeat = guard.start_heartbeat(interval=3600)
        eventually(lambda: heartbeat.sent >= 1)
        assert guard.version == 1
        with pytest.raises(PolicyViolationError, match="runaway"):
            send()
    finally:
        guard.close()
        web.should_exit = True
        thread.join(5)
        server.close()


async def test_inside_asyncio_it_runs_as_a_task(server: KillSwitchServer) -> None:
    guard = Guard(server, agent_id="bot")
    heartbeat = guard.start_heartbeat(interval=0.05)

    def beating_task() -> asyncio.Task[object] | None:
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "agentguard-heartbeat"]
        return tasks[0] if tasks else None

    task = beating_task()
    assert task is not None
    # Waited on from a thread: the heartbeat task runs on this test's event loop meanwhile.
    await asyncio.to_thread(eventually, lambda: heartbeat.sent >= 3)
    guard.stop_heartbeat()
    await asyncio.to_thread(eventually, task.done)
    assert beating_task() is None
    (instance,) = instances(server)
    assert instance.status == "exited"
    guard.close()


CHILD = textwrap.dedent(
    """
    import sys, threading
    from agentguard import Guard
    from agentguard.server import KillSwitchServer

    database, ending = sys.argv[1:3]
    server = KillSwitchServer(database)
    guard = Guard(server, agent_id="bot-" + ending)
    guard.start_heartbeat(interval=60)
    if ending == "raise":
        raise KeyError("row 7")
    if ending == "thread":
        worker = threading.Thread(target=lambda: 1 / 0, name="worker")
        worker.start()
        worker.join()
    """
)


def test_exit_and_crashes_of_real_processes_are_reported(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'fleet.db'}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    children = {
        ending: subprocess.Popen(
            [sys.executable, str(script), database, ending],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ending in ("exit", "raise", "thread")
    }
    codes = {ending: child.wait(60) for ending, child in children.items()}
    assert codes == {"exit": 0, "raise": 1, "thread": 0}
    assert "KeyError: 'row 7'" in children["raise"].stderr.read()  # the previous hook ran too
    assert "ZeroDivisionError" in children["thread"].stderr.read()
    server = KillSwitchServer(database)
    try:
        agents = {a.agent_id: a for a in server.fleet.agents("default")}
        assert agents["bot-exit"].health == "exited"
        raised = agents["bot-raise"]
        assert raised.health == "crashed"
        assert "KeyError: 'row 7'" in (raised.instances[0].error or "")
        threaded = agents["bot-thread"]
        assert threaded.health == "crashed"
        error = threaded.instances[0].error or ""
        assert "ZeroDivisionError" in error and "in thread worker" in error
    finally:
        server.close()


def test_heartbeats_report_calls_stopped_by_kills(server: KillSwitchServer) -> None:
    guard = Guard(server, agent_id="bot")

    @guard.guarded_action(name="bulk_send")
    def bulk_send() -> None:
        guard.kill("agent", "bot")
        guard.raise_if_killed()

    with pytest.raises(PolicyViolationError):
        bulk_send()
    heartbeat = guard.start_heartbeat(interval=60)
    assert heartbeat.report().cancelled == 1
    eventually(lambda: heartbeat.sent >= 1)
    (instance,) = instances(server)
    assert (instance.executed, instance.cancelled, instance.failed) == (1, 1, 0)
    assert server.fleet.agents("default", "bot")[0].cancelled == 1
    guard.close()


def old_heartbeat_body() -> type[BaseModel]:
    """The heartbeat body of a server from before the ``cancelled`` count (extra fields
    refused)."""
    fields = {n: (f.annotation, f) for n, f in HeartbeatIn.model_fields.items() if n != "cancelled"}
    config = ConfigDict(extra="forbid", frozen=True)
    return create_model("HeartbeatIn", __config__=config, **fields)  # type: ignore[call-overload,no-any-return]


def test_an_older_server_still_gets_heartbeats_without_the_cancelled_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that predates the field answers 422 naming it: the guard sends it no more."""
    import threading

    import uvicorn

    from agentguard.server import app as server_app
    from agentguard.server.api.endpoints import ENDPOINTS

    older = tuple(
        dataclasses.replace(e, body=old_heartbeat_body()) if e.body is HeartbeatIn else e
        for e in ENDPOINTS
    )
    monkeypatch.setattr(server_app, "ENDPOINTS", older)
    server = KillSwitchServer(f"sqlite:///{tmp_path / 'db.sqlite'}")
    server.start()
    token = server.create_key("default", owner="bot", scopes=["agent", "operator"], agents=["*"])
    web = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    eventually(lambda: web.started and bool(web.servers))
    port = web.servers[0].sockets[0].getsockname()[1]
    guard = Guard(f"http://127.0.0.1:{port}", api_key=token, agent_id="bot", mode="poll")
    try:
        assert guard.wait_until_synced(10)
        heartbeat = guard.start_heartbeat(interval=3600)
        eventually(lambda: heartbeat.sent >= 1)  # nothing stopped yet: no field to refuse

        @guard.guarded_action(name="bulk_send")
        def bulk_send() -> None:
            guard.kill("agent", "bot")
            guard.raise_if_killed()

        with pytest.raises(PolicyViolationError):
            bulk_send()
        assert heartbeat.report().cancelled == 1
        assert heartbeat.beat() is not None  # refused with the field, then sent without it
        assert heartbeat.last_error is None
        assert heartbeat.beat() is not None
        (instance,) = instances(server)
        assert (instance.executed, instance.cancelled) == (1, 0)  # it could not store it
    finally:
        guard.close()
        web.should_exit = True
        thread.join(5)
        server.close()
