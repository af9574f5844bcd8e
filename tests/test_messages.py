"""Messages: one log line per delivery retry, counted nouns, a crash's last line, README's words."""

from __future__ import annotations

import logging
import socket
import traceback
from datetime import datetime, timezone
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agentguard import Guard, PolicyViolationError
from agentguard.cli import output as out
from agentguard.client import Acks, Agent, InstanceAck
from agentguard.remote.heartbeat import Heartbeat
from agentguard.server import KillSwitchServer
from agentguard.wording import last_line, plural
from support import eventually

README = (Path(__file__).parents[1] / "README.md").read_text()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_remote_guards_delivery_retries_log_one_line_and_the_traceback_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    guard = Guard(url, api_key="ag_x_y", agent_id="bot", start_wait=0)
    try:
        with caplog.at_level(logging.DEBUG, logger="agentguard"):

            @guard.guarded_action
            def send() -> None: ...

            with pytest.raises(PolicyViolationError):
                send()  # never synced: refused, and the refusal is reported (and fails)
            Heartbeat(guard, 1).beat()
            eventually(
                lambda: any("could not deliver" in r.getMessage() for r in caplog.records),
                15,
                0.05,
                message="the refusal was never sent",
            )
    finally:
        guard.close()
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING
        and ("could not deliver" in r.getMessage() or "heartbeat failed" in r.getMessage())
    ]
    assert {("could not deliver" in r.getMessage()) for r in warnings} == {True, False}
    for record in warnings:
        assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    delivery = next(r for r in warnings if "could not deliver" in r.getMessage())
    assert delivery.getMessage().startswith("agentguard: could not deliver 1 intervention (")
    assert "connection refused" in delivery.getMessage()
    beat = next(r for r in warnings if "heartbeat failed" in r.getMessage())
    assert beat.getMessage().startswith("agentguard: heartbeat failed (ConnectError: ")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert {r.getMessage() for r in debug} >= {
        "agentguard: intervention delivery failed",
        "agentguard: heartbeat delivery failed",
    }


def test_counted_nouns_are_singular_for_one() -> None:
    assert plural(1, "intervention") == "1 intervention"
    assert plural(0, "intervention") == "0 interventions"
    assert plural(1000, "batch") == "1,000 batches"
    assert plural(2, "active kill switch") == "2 active kill switches"


def test_the_audit_of_one_dropped_intervention_says_intervention() -> None:
    server = KillSwitchServer()
    token = server.create_key("org_a", owner="bot", scopes=["agent", "read"])
    client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
    sent = client.post("/api/v1/interventions", json={"interventions": [], "dropped": 1})
    assert sent.status_code == 200, sent.text
    audit = client.get("/api/v1/audit", params={"action": "interventions.dropped"})
    (entry,) = audit.json()["data"]
    assert entry["detail"].startswith("1 intervention dropped by a full buffer"), entry


def test_a_crash_shows_the_exceptions_last_line_not_the_traceback_header() -> None:
    server = KillSwitchServer()
    guard = Guard(server, organization_id="org_a", agent_id="crashy", instance_id="inst-1")
    try:
        raise RuntimeError("disk full")
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    assert text.startswith("Traceback (most recent call last)")
    Heartbeat(guard, 10).stop("crashed", text)
    token = server.create_key("org_a", owner="ops", scopes=["read"])
    client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
    agent = Agent.model_validate(client.get("/api/v1/agents/crashy").json())
    assert agent.instances[0].error == text  # stored whole; shown by its last line
    shown = out.plain(out.agent(agent))  # as piped
    row = next(line for line in shown.splitlines() if line.startswith("inst-1"))
    assert row.rstrip().endswith("RuntimeError: disk full") and "Traceback" not in shown
    assert last_line(text) == "RuntimeError: disk full"


def acks(live: int, acknowledged: int, slowest_ms: float | None) -> Acks:
    return Acks(
        target_type="agent",
        target_id="bot",
        kill_switch_id="ks",
        version=1,
        killed_at=datetime.now(timezone.utc),
        live=live,
        acknowledged=acknowledged,
        slowest_ms=slowest_ms,
        instances=[
            InstanceAck(instance_id=f"i-{n}", acknowledged=n < acknowledged, latency_ms=41)
            for n in range(live)
        ],
    )


def test_kill_wait_speaks_the_words_of_the_readme() -> None:
    words = "acknowledged by 49/50 instances, slowest 41 ms"
    assert f'"{words}"' in README
    assert out.acks_done(acks(50, 49, 41.0)).startswith(words)
    assert out.acks_progress(acks(50, 49, None), 1.5) == "acknowledged by 49/50 instances (1.5 s)"
    assert out.acks_done(acks(1, 1, 12.0)).startswith("acknowledged by 1/1 instance, slowest 12 ms")
    assert out.acks_missing(acks(2, 1, None), 5).startswith(
        "acknowledged by 1/2 instances within 5 s; waiting on i-1"
    )
