"""``agentguard tail``: kills, revives and refused calls live from a real server's stream."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from agentguard import Guard, PolicyViolationError
from support.cli import COMMAND, Server, clean_env, default_sigint, run, start_server
from support.processes import free_port, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("tail-server"))
    yield s
    stop(s.popen)


class Tail:
    """``agentguard tail`` running in the background, its output read line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.popen = subprocess.Popen(
            [*COMMAND, "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(**env),
            preexec_fn=default_sigint,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        for pipe, lines in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True).start()

    @staticmethod
    def _read(pipe: IO[str] | None, lines: queue.Queue[str]) -> None:
        assert pipe is not None
        for line in pipe:
            lines.put(line.rstrip("\n"))

    def line(self, stream: str = "stdout", timeout: float = 15.0) -> str:
        try:
            return getattr(self, stream).get(timeout=timeout)  # type: ignore[no-any-return]
        except queue.Empty:
            raise AssertionError(f"no line on {stream} within {timeout} s") from None

    def rest(self, stream: str = "stdout") -> list[str]:
        lines: list[str] = []
        source: queue.Queue[str] = getattr(self, stream)
        while not source.empty():
            lines.append(source.get())
        return lines

    def wait(self, timeout: float = 15.0) -> int:
        code = self.popen.wait(timeout)
        return code

    def close(self) -> None:
        stop(self.popen)


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def block_one_call(server: Server, agent_key: str, agent_id: str) -> str:
    """A real remote guard refuses one call of a killed agent; return its instance id."""
    guard = Guard(server.url, api_key=agent_key, mode="strict", agent_id=agent_id)
    try:

        @guard.guarded_action
        def send_email(to: str) -> None:
            raise AssertionError("a killed agent's call ran")

        with pytest.raises(PolicyViolationError):
            send_email("a@example.org")
        assert guard.flush()
        return guard.instance_id
    finally:
        guard.close()


def test_tail_streams_kills_revives_and_interventions(server: Server, tails: list[Tail]) -> None:
    org = "org_tail"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    reader = server.key("read", org=org)
    server.cli(operator, "kill", "tool", "wire_money", "--reason", "frozen")  # already active
    as_json = Tail(server.env(reader), "--json", "--count", "3", "--timeout", "30")
    human = Tail(server.env(reader), "--count", "3", "--timeout", "30")
    kills_only = Tail(server.env(reader), "--no-interventions", "--count", "2", "--timeout", "30")
    tails.extend([as_json, human, kills_only])

    snapshot = json.loads(as_json.line())
    assert snapshot["event"] == "snapshot" and snapshot["id"] == "1"
    assert snapshot["data"]["version"] == 1
    assert [k["target_id"] for k in snapshot["data"]["active"]] == ["wire_money"]
    watching = f"watching {server.url}: 1 active kill switch at version 1 (Ctrl-C to stop)"
    assert human.line("stderr") == watching
    assert kills_only.line("stderr") == watching

    server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "Drained $3k")
    instance = block_one_call(server, agent_key, "rogue-bot")
    server.cli(operator, "revive", "agent", "rogue-bot")

    for tail in (as_json, human, kills_only):
        assert tail.wait() == 0, tail.rest("stderr")
    events = [json.loads(as_json.line()) for _ in range(3)]
    # Interventions are polled, so one may follow the revive; kills and revives keep their order.
    assert sorted(e["event"] for e in events) == ["intervention", "kill", "revive"]
    kill = next(e for e in events if e["event"] == "kill")
    assert kill["id"] == "2" and kill["data"]["version"] == 2 and kill["data"]["kind"] == "kill"
    assert kill["data"]["kill_switch"]["target_id"] == "rogue-bot"
    assert kill["data"]["kill_switch"]["reason"] == "Drained $3k"
    block = next(e for e in events if e["event"] == "intervention")
    assert block["id"] is None
    assert {k: block["data"][k] for k in ("type", "action", "target_id", "instance_id")} == {
        "type": "HARD_BLOCK",
        "action": "send_email",
        "target_id": "rogue-bot",
        "instance_id": instance,
    }
    assert next(e for e in events if e["event"] == "revive")["id"] == "3"

    lines = [human.line() for _ in range(3)]
    killed = next(line for line in lines if "KILLED" in line)
    assert killed.split()[1:4] == ["KILLED", "agent/rogue-bot", "by"]
    assert killed.endswith("v2  Drained $3k") and "usr_ops (key ag_" in killed
    blocked = next(line for line in lines if "BLOCKED" in line)
    assert blocked.split()[1:4] == ["BLOCKED", "send_email", "agent/rogue-bot"]
    assert f"instance={instance}" in blocked and blocked.endswith("Drained $3k")
    revived = next(line for line in lines if "REVIVED" in line)
    assert revived.split()[1:3] == ["REVIVED", "agent/rogue-bot"] and revived.endswith("v3")

    assert [line.split()[1] for line in (kills_only.line(), kills_only.line())] == [
        "KILLED",
        "REVIVED",
    ]


def test_tail_ends_on_timeout_or_count_for_scripts(server: Server) -> None:
    reader = server.key("read")
    quiet = server.cli(reader, "tail", "--timeout", "0.5")
    assert quiet.code == 0, quiet
    assert quiet.stdout == "" and "0 active kill switches at version 0" in quiet.stderr
    short = server.cli(reader, "tail", "--count", "1", "--timeout", "0.5")
    assert short.code == 1, short
    assert "Error: 0 of 1 event within 0.5 s" in short.stderr


def test_tail_stops_quietly_on_ctrl_c(server: Server, tails: list[Tail]) -> None:
    tail = Tail(server.env(server.key("read")))
    tails.append(tail)
    assert tail.line("stderr").startswith("watching ")
    tail.popen.send_signal(signal.SIGINT)
    assert tail.wait() == 0
    assert tail.rest("stderr") == []


def test_tail_errors(server: Server) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = run("tail", "--url", url, "--api-key", "ag_x", timeout=20)
    assert unreachable.code == 1, unreachable
    assert f"cannot reach the agentguard server at {url}/api/v1/kill-switch/stream" in (
        unreachable.stderr
    )
    refused = server.cli("ag_AAAAAAAA_" + "A" * 40, "tail", "--timeout", "5")
    assert refused.code == 1 and "invalid or revoked API key" in refused.stderr


def stored_meanwhile(database_url: str) -> None:
    """An intervention stored while ``tail`` is away (written straight to the database)."""
    from sqlalchemy import insert

    from agentguard.server.store.database import Database
    from agentguard.server.store.tables import interventions
    from support.db_rows import intervention_row

    database = Database(database_url)
    try:
        with database.write() as conn:
            row = intervention_row("iv-meanwhile", "default", target_id="a")
            conn.execute(insert(interventions).values(**row))
    finally:
        database.dispose()


def test_tail_survives_a_server_restart(tmp_path: Path, tails: list[Tail]) -> None:
    first = start_server(tmp_path)
    try:
        operator = first.key("operator", org="default")
        tail = Tail(first.env(operator), "--json", "--count", "3", "--timeout", "60")
        tails.append(tail)
        assert json.loads(tail.line())["event"] == "snapshot"
        first.cli(operator, "kill", "agent", "a")
        assert json.loads(tail.line())["id"] == "1"
    finally:
        stop(first.popen)
    assert tail.line("stderr").startswith("stream lost (")
    stored_meanwhile(first.database_url)  # the new stream starts after it: only a catch-up shows it
    port = first.url.rsplit(":", 1)[1]
    again = subprocess.Popen(
        [*COMMAND, "serve", "--port", port, "--database-url", first.database_url,
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        # Resumed after version 1 (Last-Event-ID): the next kill arrives, no second snapshot.
        deadline = time.monotonic() + 30
        killed = first.cli(operator, "kill", "agent", "b", timeout=10)
        while killed.code != 0 and time.monotonic() < deadline:
            assert "cannot reach" in killed.stderr, killed
            killed = first.cli(operator, "kill", "agent", "b", timeout=10)
        assert killed.code == 0, killed
        assert tail.wait(30) == 0, tail.rest("stderr")
        caught_up = json.loads(tail.line())
        assert (caught_up["event"], caught_up["data"]["id"]) == ("intervention", "iv-meanwhile")
        event = json.loads(tail.line())
        assert (event["event"], event["id"]) == ("kill", "2")
        assert event["data"]["kill_switch"]["target_id"] == "b"
    finally:
        stop(again)


def test_a_call_stopped_in_flight_reads_as_stopped_with_how_long_it_ran() -> None:
    from agentguard.cli import output as out
    from agentguard.protocol import StreamEvent

    data = {"type": "CANCELLED", "action": "bulk_send", "target_type": "agent",
            "target_id": "rogue-bot", "agent_id": "rogue-bot", "instance_id": "i-1",
            "reason": "Drained $3k", "ran_for_ms": 2340.0,
            "occurred_at": "2026-12-07T18:00:00+00:00"}  # fmt: skip
    line = out.stream_event(StreamEvent("intervention", None, data))
    assert line is not None
    words = line.plain.split()
    assert words[1:4] == ["STOPPED", "bulk_send", "agent/rogue-bot"]
    assert line.plain.endswith("after 2.3 s  Drained $3k")


def test_a_refused_model_call_names_its_model_in_tail_and_listing() -> None:
    from agentguard.cli import output as out
    from agentguard.protocol import StreamEvent
    from agentguard.records import Intervention

    data = {"type": "HARD_BLOCK", "action": "llm", "target_type": "agent",
            "target_id": "rogue-bot", "agent_id": "rogue-bot", "model": "gpt-4o-mini",
            "occurred_at": "2026-12-07T18:00:00+00:00"}  # fmt: skip
    line = out.stream_event(StreamEvent("intervention", None, data))
    assert line is not None
    assert "model=gpt-4o-mini  agent=rogue-bot" in line.plain
    listing = out.plain(out.interventions([Intervention.model_validate(data)], 1))
    assert "llm gpt-4o-mini" in listing
