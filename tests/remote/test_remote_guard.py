"""Remote guards against real server processes: every mode, and the faults they must survive."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import AgentGuardWarning, Guard, PolicyViolationError, scope
from support import eventually
from support.api import bearer
from support.live import Live, start_live
from support.pg_cluster import PrivateCluster
from support.processes import Process, free_port
from support.tcpproxy import TcpProxy

GuardFactory = Callable[..., Guard]


@pytest.fixture
def make_guard() -> Iterator[GuardFactory]:
    guards: list[Guard] = []

    def make(url: str, key: str, **options: Any) -> Guard:
        options.setdefault("max_staleness", 2.0)
        guard = Guard(url, api_key=key, **options)
        guards.append(guard)
        return guard

    yield make
    # Together: a guard whose server is gone waits up to 5 s to deliver its refusals.
    with ThreadPoolExecutor(max(len(guards), 1)) as closing:
        list(closing.map(Guard.close, guards))


def refuses(guard: Guard, agent: str = "bot") -> bool:
    with scope(agent_id=agent):
        try:
            guard.enforce("probe")
        except PolicyViolationError:
            return True
    return False


@pytest.mark.parametrize("mode", ["stream", "poll", "strict"])
def test_every_mode_refuses_after_a_kill_and_allows_after_the_revive(
    live: Live, make_guard: GuardFactory, mode: str
) -> None:
    guard = make_guard(live.url, live.agent, mode=mode, poll_interval=0.1)
    assert guard.wait_until_synced(5)

    @guard.guarded_action(agent_id="bot")
    def send() -> str:
        return "sent"

    @guard.guarded_action(agent_id="bot")
    async def send_async() -> str:
        return "sent"

    assert send() == "sent" and asyncio.run(send_async()) == "sent"
    assert live.kill("bot").status_code == 200
    eventually(lambda: refuses(guard), 5)
    with pytest.raises(PolicyViolationError, match="'bot' was killed"):
        send()
    with pytest.raises(PolicyViolationError):
        asyncio.run(send_async())
    assert live.revive("bot").status_code == 200
    eventually(lambda: not refuses(guard), 5)
    assert send() == "sent"


def test_remote_refusals_reach_the_server_exactly_once(
    live: Live, make_guard: GuardFactory
) -> None:
    guard = make_guard(live.url, live.agent, instance_id="inst-7")
    assert guard.wait_until_synced(5)
    live.kill("bot")
    eventually(lambda: refuses(guard), 5)
    for _ in range(24):
        refuses(guard)
    refused = guard.counts("agent", "bot").refused
    assert guard.flush(10)
    stored = httpx.get(
        f"{live.url}/api/v1/interventions",
        params={"target_id": "bot", "limit": 1000},
        headers=bearer(live.admin),
    ).json()
    assert stored["count"] == refused == 25
    assert {iv["instance_id"] for iv in stored["data"]} == {"inst-7"}
    assert all(iv["killed_by"].startswith("usr_ops") for iv in stored["data"])


def test_the_guard_acknowledges_kills(live: Live, make_guard: GuardFactory) -> None:
    guard = make_guard(live.url, live.agent, instance_id="inst-ack", agent_id="bot")
    assert guard.wait_until_synced(5)
    live.kill("bot")

    def acked() -> bool:
        body = httpx.get(
            f"{live.url}/api/v1/kill-switch/acks",
            params={"target_type": "agent", "target_id": "bot"},
            headers=bearer(live.admin),
        ).json()
        return any(i["instance_id"] == "inst-ack" and i["acknowledged"] for i in body["instances"])

    eventually(acked, 5)


def test_server_killed_mid_stream_and_restarted(
    start_process: Callable[..., Process], tmp_path: Path, make_guard: GuardFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    port = free_port()
    live = start_live(start_process, url, port=port)
    guard = make_guard(live.url, live.agent, max_staleness=30)
    assert guard.wait_until_synced(5)
    live.kill("bot")
    eventually(lambda: refuses(guard), 5)
    os.killpg(live.process.popen.pid, signal.SIGKILL)
    live.process.popen.wait(5)
    assert refuses(guard)  # last known state, within max_staleness
    restarted = start_live(start_process, url, port=port, keys=False).with_keys_of(live)
    assert refuses(guard)  # the kill survived the crash
    assert restarted.revive("bot").status_code == 200
    eventually(lambda: not refuses(guard), 15)  # the client reconnected and resynced
    restarted.kill("bot")
    eventually(lambda: refuses(guard), 5)


def test_a_cut_stream_is_noticed_and_resynced(live: Live, make_guard: GuardFactory) -> None:
    proxy = TcpProxy(live.process.port)
    try:
        guard = make_guard(proxy.url, live.agent, max_staleness=30)
        assert guard.wait_until_synced(5)
        proxy.refusing = True
        proxy.cut()
        live.kill("bot")  # committed while this guard cannot hear it
        time.sleep(0.2)  # nothing may reach the guard meanwhile: a wait for no event
        assert not refuses(guard)
        proxy.refusing = False
        eventually(lambda: refuses(guard), 15)  # reconnect + the change missed
        # One snapshot, at the start; the reconnection sent Last-Event-ID and got the kill,
        # then the resumed event.
        eventually(lambda: guard.source.resumes >= 1, 5)
        assert guard.source.resyncs == 1
    finally:
        proxy.close()


def test_a_silent_stream_times_out_and_the_guard_fails_closed(
    live: Live, make_guard: GuardFactory
) -> None:
    proxy = TcpProxy(live.process.port)
    try:
        guard = make_guard(proxy.url, live.agent, max_staleness=1.0)  # keep-alive 0.5 s expected
        assert guard.wait_until_synced(5)
        assert not refuses(guard)
        proxy.refusing = True
        proxy.silent.set()  # the connection stays open but nothing arrives
        eventually(lambda: refuses(guard), 10)
        with scope(agent_id="bot"), pytest.raises(PolicyViolationError, match="stale|never"):
            guard.enforce("probe")
        proxy.silent.clear()
        proxy.refusing = False
        proxy.cut()
        eventually(lambda: not refuses(guard), 15)
    finally:
        proxy.close()


def test_unreachable_at_start_closed_open_and_bootstrap(
    make_guard: GuardFactory, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    closed = make_guard(nowhere, "ag_x_y")
    with scope(agent_id="bot"), pytest.raises(PolicyViolationError, match="never been synced"):
        closed.enforce("probe")

    opened = make_guard(nowhere, "ag_x_y", fail_mode="open")
    with scope(agent_id="bot"), pytest.warns(AgentGuardWarning, match="fail_mode='open'"):
        opened.enforce("probe")

    state = {
        "organization_id": "org_a",
        "version": 4,
        "active": [
            {
                "id": "ks-1",
                "target_type": "agent",
                "target_id": "bot",
                "reason": "from file",
                "is_active": True,
                "killed_by": "usr_ops",
                "killed_at": "2026-11-22T10:00:00Z",
                "revived_by": None,
                "revived_at": None,
                "organization_id": "org_a",
            }
        ],
    }
    path = tmp_path / "kill-state.json"
    path.write_text(json.dumps(state))
    booted = make_guard(nowhere, "ag_x_y", bootstrap=str(path))
    assert refuses(booted, "bot")
    with scope(agent_id="bot"), pytest.raises(PolicyViolationError, match="from file"):
        booted.enforce("probe")
    assert not refuses(booted, "other")  # bootstrapped state is trusted until the first sync


def test_bad_bootstrap_file_names_the_field(tmp_path: Path) -> None:
    from agentguard import InvalidInputError

    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInputError) as info:
        Guard("http://127.0.0.1:9", api_key="k", bootstrap=str(path))
    assert info.value.field == "bootstrap"


def test_revoked_key_is_a_configuration_error(
    live: Live, make_guard: GuardFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(live.process.port)
    try:
        guard = make_guard(proxy.url, live.agent, max_staleness=1.0)
        assert guard.wait_until_synced(5)
        key_id = live.agent.rsplit("_", 1)[0]
        assert (
            httpx.delete(f"{live.url}/api/v1/keys/{key_id}", headers=bearer(live.admin)).status_code
            == 200
        )
        with caplog.at_level(logging.ERROR, logger="agentguard"):
            proxy.cut()  # the reconnect presents the revoked key
            eventually(lambda: "refused the API key (HTTP 401" in caplog.text, 10)
        eventually(lambda: refuses(guard), 10)  # stale, closed: refuses
    finally:
        proxy.close()


class ScriptedStream:
    """A test peer speaking SSE: each connection plays the next script of raw events."""

    def __init__(self, scripts: list[list[str]]) -> None:
        from starlette.applications import Starlette
        from starlette.responses import StreamingResponse
        from starlette.routing import Route

        self.scripts = scripts
        self.connections = 0

        async def stream(request: Any) -> StreamingResponse:
            script = self.scripts[min(self.connections, len(self.scripts) - 1)]
            self.connections += 1

            async def body() -> Any:
                for chunk in script:
                    yield chunk.encode()
                while True:  # then keep the connection alive and quiet
                    await asyncio.sleep(0.2)
                    yield b": keep-alive\n\n"

            return StreamingResponse(body(), media_type="text/event-stream")

        import uvicorn

        self.port = free_port()
        app = Starlette(routes=[Route("/api/v1/kill-switch/stream", stream)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        eventually(lambda: self.server.started, 10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def _snapshot(version: int, *killed: str) -> str:
    active = [
        {
            "id": f"ks-{name}",
            "target_type": "agent",
            "target_id": name,
            "reason": "r",
            "is_active": True,
            "killed_by": "usr",
            "killed_at": "2026-11-22T10:00:00Z",
            "revived_by": None,
            "revived_at": None,
            "organization_id": "org",
        }
        for name in killed
    ]
    data = json.dumps({"organization_id": "org", "version": version, "active": active})
    return f"event: snapshot\nid: {version}\ndata: {data}\n\n"


def test_a_malformed_event_drops_the_connection_and_resyncs(make_guard: GuardFactory) -> None:
    peer = ScriptedStream(
        [
            [_snapshot(1), "event: kill\nid: 2\ndata: {this is not json\n\n"],
            [_snapshot(2, "bot")],
        ]
    )
    try:
        guard = make_guard(peer.url, "k", max_staleness=30)
        eventually(lambda: peer.connections >= 2, 10)
        eventually(lambda: refuses(guard), 5)
        assert guard.version == 2
    finally:
        peer.close()


def test_a_version_going_backwards_never_undoes_a_kill(
    make_guard: GuardFactory, caplog: pytest.LogCaptureFixture
) -> None:
    revive_older = json.dumps(
        {
            "version": 3,
            "kind": "revive",
            "kill_switch": {
                "id": "ks-bot",
                "target_type": "agent",
                "target_id": "bot",
                "reason": "r",
                "is_active": False,
                "killed_by": "usr",
                "killed_at": "2026-11-22T10:00:00Z",
                "revived_by": "usr",
                "revived_at": "2026-11-22T10:01:00Z",
                "organization_id": "org",
            },
        }
    )
    peer = ScriptedStream(
        [
            [
                _snapshot(5, "bot"),
                f"event: revive\nid: 3\ndata: {revive_older}\n\n",
                "event: bogus\ndata: {}\n\n",
            ],
            [_snapshot(2)],  # a server whose history went backwards
        ]
    )
    try:
        with caplog.at_level(logging.ERROR, logger="agentguard"):
            guard = make_guard(peer.url, "k", max_staleness=30)
            eventually(lambda: peer.connections >= 2, 10)
            eventually(lambda: "older than the 5 already applied" in caplog.text, 5)
        assert refuses(guard) and guard.version == 5
    finally:
        peer.close()


@pytest.mark.postgres
def test_a_kill_through_one_replica_reaches_guards_of_another(
    start_process: Callable[..., Process],
    make_postgres_url: Callable[[], str],
    make_guard: GuardFactory,
) -> None:
    url = make_postgres_url()
    a = start_live(start_process, url)
    b = start_live(start_process, url, keys=False).with_keys_of(a)
    on_b = make_guard(b.url, b.agent)
    assert on_b.wait_until_synced(5)
    started = time.monotonic()
    assert a.kill("bot").status_code == 200
    eventually(lambda: refuses(on_b), 5)
    assert time.monotonic() - started < 5
    a.revive("bot")
    eventually(lambda: not refuses(on_b), 5)


@pytest.mark.postgres
def test_postgres_restarted_under_two_replicas(
    start_process: Callable[..., Process],
    private_postgres: PrivateCluster,
    make_guard: GuardFactory,
) -> None:
    url = private_postgres.create_database()
    a = start_live(start_process, url)
    b = start_live(start_process, url, keys=False).with_keys_of(a)
    on_b = make_guard(b.url, b.agent, max_staleness=60)
    assert on_b.wait_until_synced(5)
    a.kill("before")
    eventually(lambda: refuses(on_b, "before"), 5)
    private_postgres.restart()
    # The replicas reconnect (pool and LISTEN) and resync; kills made after the restart, through
    # either replica, reach the guard on the other one.
    eventually(lambda: a.kill("after").status_code == 200, 30)
    eventually(lambda: refuses(on_b, "after"), 15)
    assert refuses(on_b, "before")
    eventually(lambda: b.revive("before").status_code == 200, 30)
    eventually(lambda: not refuses(on_b, "before"), 15)
