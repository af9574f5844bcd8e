"""``agentguard serve``, and ``keys`` and ``db`` on the database (remote: test_cli_*.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from agentguard.cli import main
from agentguard.server.store.database import Database
from agentguard.server.store.tables import api_keys, audit_log
from support.cli import TOKEN, first_token, serve, wait_serving
from support.processes import stop


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_keys_create_list_revoke(database_url: str) -> None:
    created = run(
        "keys",
        "create",
        "--database-url",
        database_url,
        "--org",
        "org_a",
        "--owner",
        "usr_abc",
        "--scope",
        "operator",
        "--scope",
        "agent",
        "--json",
    )
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert TOKEN.fullmatch(key["secret"])
    assert key["scopes"] == ["agent", "operator"] and key["organization_id"] == "org_a"

    listed = run("keys", "list", "--database-url", database_url, "--org", "org_a", "--json")
    assert listed.exit_code == 0
    body = json.loads(listed.output)
    assert body["count"] == 1 and body["data"][0]["id"] == key["id"]
    assert "secret" not in body["data"][0]
    human = run("keys", "list", "--database-url", database_url, "--org", "org_a")
    assert key["id"] in human.output and "active" in human.output
    other = run("keys", "list", "--database-url", database_url, "--org", "org_b", "--json")
    assert json.loads(other.output)["count"] == 0

    revoked = run("keys", "revoke", key["id"], "--database-url", database_url, "--org", "org_a")
    assert revoked.exit_code == 0 and f"revoked {key['id']}" in revoked.output
    again = run("keys", "revoke", key["id"], "--database-url", database_url, "--org", "org_a")
    assert again.exit_code == 3 and "already revoked" in again.output
    missing = run("keys", "revoke", "ag_nothere1", "--database-url", database_url, "--org", "org_a")
    assert missing.exit_code == 3

    database = Database(database_url)
    with database.read() as conn:
        assert conn.execute(select(api_keys.c.secret_hash)).scalar_one() != key["secret"]
        actions = conn.execute(select(audit_log.c.action).order_by(audit_log.c.seq)).scalars()
        assert list(actions) == ["key.create", "key.revoke"]
    database.dispose()


def test_keys_create_needs_a_valid_scope(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(
        main, ["keys", "create", "--database-url", url, "--owner", "x", "--scope", "root"]
    )
    assert result.exit_code == 2
    assert "root" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    assert CliRunner().invoke(main, ["frobnicate"]).exit_code == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_creates_and_prints_an_admin_key_once(tmp_path: Path, workers: int) -> None:
    popen, port = serve(tmp_path, "--workers", str(workers))
    try:
        token = first_token(popen)
        wait_serving(port, popen)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        keys = httpx.get(f"{base}/keys", headers=headers, timeout=5).json()
        assert keys["count"] == 1 and keys["data"][0]["scopes"] == ["admin"]
        for _ in range(4):  # whichever worker answers knows the key
            kill = {"target_type": "agent", "target_id": "x"}
            assert (
                httpx.get(
                    f"{base}/kill-switch/check", params=kill, headers=headers, timeout=5
                ).status_code
                == 200
            )
    finally:
        stop(popen)
    assert (tmp_path / "agentguard.db").exists()  # the default database, in the working dir

    popen, port = serve(tmp_path)
    try:
        wait_serving(port, popen)
    finally:
        out = stop(popen)
    assert not TOKEN.search(out)  # not on the second start: the database has a key


def test_serve_rule_trips_on_fleet_totals_in_every_worker(tmp_path: Path) -> None:
    popen, port = serve(tmp_path, "--workers", "2", "--rule", "budget:name=fleet,limit_usd=5")
    try:
        headers = {"Authorization": f"Bearer {first_token(popen)}"}
        wait_serving(port, popen)
        base = f"http://127.0.0.1:{port}/api/v1"
        beat = {"interval": 10, "executed": 1, "refused": 0, "failed": 0, "version": 0,
                "agent_id": "bot"}  # fmt: skip
        for i in range(3):  # three instances at $2 each, whichever worker takes each beat
            body = {**beat, "instance_id": f"i-{i}", "cost_usd": 2.0}
            answer = httpx.post(f"{base}/heartbeats", headers=headers, json=body, timeout=5)
            assert answer.status_code == 200, answer.text
        assert answer.json()["killed"] is True
        (kill,) = httpx.get(f"{base}/kill-switch/active", headers=headers, timeout=5).json()["data"]
        assert kill["killed_by"] == "rule:fleet"
        assert kill["reason"] == (
            "spent $6.00 in 3600 s across all instances of agent 'bot'; limit $5.00"
        )
    finally:
        stop(popen)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("budget:limit=5", "budget rules have no field 'limit'"),
        ("rate:limit=many", "limit must be a whole number; got 'many'"),
        ("panic", "the kind must be one of rate, budget, loop, error-rate"),
        ("loop:repeats=3", "LoopRule needs each call's arguments"),
        ("rate:per=run", "heartbeats are totalled per agent"),
        ("budget:window=0", "window must be a positive number"),
        ("budget;rate", "give each rule its own --rule"),
    ],
)
def test_serve_refuses_a_bad_rule_before_starting(tmp_path: Path, spec: str, says: str) -> None:
    popen, _ = serve(tmp_path, "--rule", spec)
    out = popen.communicate(timeout=30)[0]
    assert popen.returncode == 2, out
    assert "Invalid value for --rule" in out and says in out, out
    assert not (tmp_path / "agentguard.db").exists()  # refused before touching the database


@pytest.mark.parametrize(
    ("options", "hint", "says"),
    [
        (("--revive-approvals", "robot:x=2"), "--revive-approvals", "the target type must be"),
        (("--revive-approvals", "two"), "--revive-approvals", "is not a rule such as 2"),
        (("--revive-approvals", "2;3"), "--revive-approvals", "its own --revive-approvals"),
        (("--revive-request-ttl", "40d"), "--revive-request-ttl", "more than 30 days"),
    ],
)
def test_serve_refuses_bad_revive_approvals_before_starting(
    tmp_path: Path, options: tuple[str, ...], hint: str, says: str
) -> None:
    popen, _ = serve(tmp_path, *options)
    out = popen.communicate(timeout=30)[0]
    assert popen.returncode == 2, out
    assert f"Invalid value for {hint}" in out or f"Invalid value for '{hint}'" in out, out
    assert says in out, out
    assert not (tmp_path / "agentguard.db").exists()  # refused before touching the database


def test_keys_create_on_the_database_names_agents(database_url: str) -> None:
    on_db = ("--database-url", database_url, "--org", "org_a")
    created = run("keys", "create", *on_db, "--owner", "bot", "--scope", "agent",
                  "--agent", "billing-*", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["agents"] == ["billing-*"]
    bad = run("keys", "create", *on_db, "--owner", "bot", "--scope", "agent", "--agent", "a*b")
    assert bad.exit_code == 2 and "Invalid value for '--agent'" in bad.output
    human = run("keys", "list", *on_db)
    assert "billing-*" in human.output.splitlines()[1]
