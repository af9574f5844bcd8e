"""A kill stops calls already running, across processes: a real server, and one agent process
per kind of call, each killed through the HTTP API while its call is in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import bearer
from support.live import Live, start_live
from support.processes import Process, free_port, stop, wait_until_serving

AGENT_SCRIPT = Path(__file__).with_name("inflight_agent.py")

# kind -> the action whose call the kill stops
KINDS = {
    "coroutine": "bulk_send",
    "async_generator": "stream_tokens",
    "sync_generator": "export_rows",
    "cooperative_sync": "bulk_send",
    "http_stream": "http_request",
    "openai_stream": "llm",
    "anthropic_stream": "llm",
    "langchain": "crawl",
    "openai_agents": "crawl",
    "mcp": "crawl",
}


@pytest.fixture(scope="module")
def live_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server process (SQLite) for the module: each test kills its own agent."""
    tmp = tmp_path_factory.mktemp("inflight")
    started: list[Process] = []

    def start_process(argv: list[str], *, env: dict[str, str], port: int | None = None) -> Process:
        port = port or free_port()
        log = tmp / f"server-{port}.log"
        popen = subprocess.Popen(
            [a.replace("{port}", str(port)) for a in argv],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=tmp,
            start_new_session=True,
        )
        process = Process(popen, port, log)
        started.append(process)
        wait_until_serving(process)
        return process

    live = start_live(start_process, f"sqlite:///{tmp / 'agentguard.db'}", keepalive=1.0)
    yield live
    for process in started:
        stop(process)


def run_agent(live: Live, kind: str, agent_id: str, out: Path, kill: Callable[[], None]) -> dict:
    """Start the agent process, kill once its call is in flight, and return its report."""
    popen = subprocess.Popen(
        [sys.executable, str(AGENT_SCRIPT), live.url, live.agent, agent_id, kind, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().strip()
        assert line == "ready", (line, popen.stderr.read() if popen.stderr else "")
        kill()
        assert popen.wait(60) == 0, popen.stderr.read() if popen.stderr else ""
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def api(live: Live, path: str, **params: Any) -> Any:
    answer = httpx.get(f"{live.url}/api/v1{path}", params=params, headers=bearer(live.admin))
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_kill_stops_each_kind_of_call_in_flight(
    live_module: Live, kind: str, tmp_path: Path
) -> None:
    live = live_module
    agent_id = f"inflight-{kind.replace('_', '-')}"
    killed: dict[str, Any] = {}

    def kill() -> None:
        answer = live.post(
            "/kill-switch/kill", target_type="agent", target_id=agent_id, reason="runaway"
        )
        assert answer.status_code == 200, answer.text
        killed.update(answer.json(), sent=time.monotonic())

    report = run_agent(live, kind, agent_id, tmp_path / "out.json", kill)
    action = KINDS[kind]
    if kind == "mcp":  # a tool error result, not an exception: the client sees it
        assert report["outcome"] == "returned"
        assert report["value"]["is_error"] is True
        assert f"'{action}' stopped after" in report["value"]["text"]
        assert "was killed by" in report["value"]["text"]
    else:
        assert report["outcome"].endswith("PolicyViolationError"), report
        assert report["cancelled"] is True and report["reason"] == "runaway"
        assert report["kill_switch_id"] == killed["id"]
        assert report["killed_by"] == killed["killed_by"]
        assert f"'{action}' stopped after" in report["message"]
        assert report["took"] < 20  # the call would have run 30 s
    assert report["flushed"] is True
    counts = report["counts"]
    assert (counts["executed"], counts["cancelled"], counts["failed"]) == (1, 1, 0), counts

    stored = api(live, "/interventions", target_id=agent_id, type="CANCELLED")
    assert stored["count"] == 1, stored
    iv = stored["data"][0]
    assert (iv["action"], iv["target_type"], iv["target_id"]) == (action, "agent", agent_id)
    assert iv["kill_switch_id"] == killed["id"] and iv["killed_by"] == killed["killed_by"]
    assert iv["reason"] == "runaway" and iv["agent_id"] == agent_id
    assert iv["ran_for_ms"] is not None and iv["ran_for_ms"] > 0
    if kind.endswith("_stream") and action == "llm":  # a model call: its model is named
        assert iv["model"] == ("gpt-5" if kind == "openai_stream" else "claude-sonnet-4-5")
        assert report["outcome"] == (
            "AnthropicPolicyViolationError"
            if kind == "anthropic_stream"
            else "PolicyViolationError"
        )
    if kind != "mcp":
        assert iv["id"] == report["intervention_id"]
        assert iv["ran_for_ms"] == pytest.approx(report["ran_for"] * 1000, abs=1)
    agent = api(live, f"/agents/{agent_id}")
    assert (agent["executed"], agent["cancelled"], agent["failed"]) == (1, 1, 0), agent


def test_an_opted_out_call_runs_to_its_end(live_module: Live, tmp_path: Path) -> None:
    live = live_module

    def kill() -> None:
        answer = live.post(
            "/kill-switch/kill", target_type="agent", target_id="inflight-opt-out", reason="x"
        )
        assert answer.status_code == 200, answer.text

    report = run_agent(live, "opt_out", "inflight-opt-out", tmp_path / "out.json", kill)
    assert report["outcome"] == "returned" and report["value"] == "settled", report
    counts = report["counts"]
    assert (counts["executed"], counts["cancelled"]) == (1, 0)
    assert api(live, "/interventions", target_id="inflight-opt-out")["count"] == 0
