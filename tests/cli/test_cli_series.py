"""``agentguard series [AGENT]`` as a subprocess against ``agentguard serve``: the table and
``--json`` of ``GET /api/v1/agents/{id}/series`` and ``GET /api/v1/series``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from support.api import bearer
from support.cli import Server, start_server
from support.processes import stop

ORG = "org_series_cli"
AGENT = "email-campaign"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cli-series"))
    yield s
    stop(s.popen)


@pytest.fixture(scope="module")
def history(server: Server) -> dict[str, str]:
    """An agent that made calls, was refused a few, and was killed and revived; another agent
    that only made calls. Returns the keys used."""
    keys = {"agent": server.key("agent", org=ORG), "operator": server.key("operator", org=ORG)}
    api = f"{server.url}/api/v1"

    def post(key: str, path: str, body: dict[str, Any]) -> None:
        answer = httpx.post(f"{api}{path}", json=body, headers=bearer(keys[key]))
        assert answer.is_success, answer.text

    for agent, executed, cost in ((AGENT, 40, 1.25), ("billing-sync", 7, 0.5)):
        post("agent", "/heartbeats", {"instance_id": f"{agent}-1", "agent_id": agent,
                                      "interval": 60, "executed": executed, "refused": 0,
                                      "failed": 2, "cost_usd": cost, "version": 0})  # fmt: skip
    post("operator", "/kill-switch/kill", {"target_type": "agent", "target_id": AGENT,
                                           "reason": "Drained $3k in 4 minutes"})  # fmt: skip
    when = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    items = [{"id": f"iv-{n}", "type": "HARD_BLOCK", "action": "send_email",
              "target_type": "agent", "target_id": AGENT, "agent_id": AGENT,
              "occurred_at": when} for n in range(3)]  # fmt: skip
    post("agent", "/interventions", {"interventions": items})
    post("operator", "/kill-switch/revive", {"target_type": "agent", "target_id": AGENT})
    return keys


def api_series(server: Server, key: str, path: str, **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/v1{path}", params=params, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_json_is_the_api_s_answer(server: Server, history: dict[str, str]) -> None:
    read = server.key("read", org=ORG)
    shown = server.cli(read, "series", AGENT, "--window", "2h", "--step", "10m", "--json")
    assert shown.code == 0, shown
    answer = shown.json()
    expected = api_series(server, read, f"/agents/{AGENT}/series", window="2h", step="10m")
    assert answer == expected | {"points": answer["points"]}  # the same but for the clock
    assert (answer["window"], answer["step"], len(answer["points"])) == (7200, 600, 12)
    totals = answer["totals"]
    assert (totals["executed"], totals["refused"], totals["failed"]) == (40, 3, 2)
    assert totals["cost_usd"] == pytest.approx(1.25)
    assert [e["kind"] for e in answer["events"]] == ["kill", "revive"]

    whole = server.cli(read, "series", "--window", "1h", "--step", "5m", "--json").json()
    assert whole["agent_id"] is None and len(whole["points"]) == 12
    assert whole["totals"]["executed"] == 47 and whole["totals"]["refused"] == 3


def test_the_table_has_a_row_per_step_totals_and_the_kills(
    server: Server, history: dict[str, str]
) -> None:
    read = server.key("read", org=ORG)
    shown = server.cli(read, "series", AGENT, "--window", "3h")  # steps of 1h by default
    assert shown.code == 0, shown
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"agent '{AGENT}': last 3 h in steps of 1 h, ")
    assert lines[1].split() == [
        "FROM", "EXECUTED", "REFUSED", "STOPPED", "UNAVAILABLE", "FAILED", "COST",
    ]  # fmt: skip
    rows = lines[2:5]
    assert all(len(row.split()) == 8 for row in rows), rows  # a date, a time, six numbers
    assert lines[5].split() == ["TOTAL", "40", "3", "0", "0", "2", "$1.25"]
    assert sum(int(row.split()[2]) for row in rows) == 40  # every call is in a row
    assert lines[6] == "kills and revives:"
    assert lines[7].split() == ["WHEN", "EVENT", "TARGET", "BY", "REASON"]
    kill, revive = lines[8], lines[9]
    assert kill.split()[2:4] == ["kill", f"agent/{AGENT}"]  # after the date and time
    assert kill.endswith("Drained $3k in 4 minutes")
    assert revive.split()[2:4] == ["revive", f"agent/{AGENT}"]
    assert len(lines) == 10

    quiet = server.cli(read, "series", "billing-sync", "--window", "1h", "--step", "30m")
    assert quiet.code == 0, quiet
    assert quiet.stdout.splitlines()[-1] == "no kills or revives in the window"


def test_an_unknown_agent_and_a_bad_step(server: Server, history: dict[str, str]) -> None:
    read = server.key("read", org=ORG)
    unknown = server.cli(read, "series", "nobody", "--window", "1h", "--step", "5m")
    assert unknown.code == 3, unknown
    assert "nobody" in unknown.stderr
    bad = server.cli(read, "series", AGENT, "--window", "1h", "--step", "7s")
    assert bad.code == 2, bad
    assert "step" in bad.stderr
    agent_key = server.key("agent", org=ORG)  # an agent key reads no series
    refused = server.cli(agent_key, "series", AGENT)
    assert refused.code == 1, refused
    assert "403" in refused.stderr or "scope" in refused.stderr
