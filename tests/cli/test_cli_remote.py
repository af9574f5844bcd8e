"""The operator commands, run as subprocesses against ``agentguard serve`` on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from agentguard import Guard, PolicyViolationError
from support import eventually
from support.cli import COMMAND, Server, clean_env, run, start_server
from support.processes import free_port, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cli-server"))
    yield s
    stop(s.popen)


@pytest.fixture
def operator(server: Server) -> str:
    """An operator key in a fresh organization."""
    return server.key("operator")


def test_kill_check_active_revive(server: Server, operator: str) -> None:
    killed = server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "Drained $3k")
    assert killed.code == 0, killed
    assert killed.stdout.strip() == "killed agent 'rogue-bot' (version 1): Drained $3k"

    record = server.cli(operator, "kill", "tool", "send_email", "--json")
    assert record.code == 0, record
    body = record.json()
    assert body["target_type"] == "tool" and body["target_id"] == "send_email"
    assert body["is_active"] is True and body["reason"] is None
    assert body["killed_by"].startswith("usr_ops (key ag_")
    assert set(body) == {
        "id", "target_type", "target_id", "reason", "is_active", "killed_by", "killed_at",
        "revived_by", "revived_at", "organization_id",
    }  # fmt: skip

    check = server.cli(operator, "check", "agent", "rogue-bot")
    assert check.code == 0, check
    assert "agent 'rogue-bot' is KILLED by" not in check.stdout  # /check does not say who
    assert check.stdout.startswith("agent 'rogue-bot' is KILLED since ")
    assert "ago): Drained $3k" in check.stdout or "just now): Drained $3k" in check.stdout
    status = server.cli(operator, "check", "agent", "rogue-bot", "--json").json()
    assert status["is_killed"] is True and status["reason"] == "Drained $3k"
    assert set(status) == {"is_killed", "target_type", "target_id", "reason", "killed_at"}
    clear = server.cli(operator, "check", "run", "r-1")
    assert clear.code == 0 and clear.stdout.strip() == "run 'r-1' is not killed"

    table = server.cli(operator, "active")
    assert table.code == 0, table
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TYPE", "ID", "KILLED", "BY", "REASON"]
    assert [r.split()[:2] for r in rows] == [["tool", "send_email"], ["agent", "rogue-bot"]]
    assert rows[1].endswith("Drained $3k") and ("ago" in rows[1] or "just now" in rows[1])
    assert header.index("KILLED") == rows[0].index(rows[0].split()[2])  # aligned columns
    page = server.cli(operator, "active", "--json").json()
    assert page["count"] == 2 and [k["target_id"] for k in page["data"]] == [
        "send_email",
        "rogue-bot",
    ]
    limited = server.cli(operator, "active", "--limit", "1")
    assert "(1 of 2; see --limit and --skip)" in limited.stdout

    revived = server.cli(operator, "revive", "agent", "rogue-bot")
    assert revived.code == 0, revived
    assert revived.stdout.startswith("revived agent 'rogue-bot' (version 3); it was killed ")
    record = server.cli(operator, "revive", "tool", "send_email", "--json").json()
    assert record["is_active"] is False and record["revived_by"].startswith("usr_ops")
    assert server.cli(operator, "active").stdout.strip() == "no active kill switches"
    assert server.cli(operator, "active", "--json").json() == {"data": [], "count": 0}


def test_kill_for_a_time(server: Server, operator: str) -> None:
    killed = server.cli(operator, "kill", "agent", "look-bot", "--for", "1h", "-r", "a look")
    assert killed.code == 0, killed
    assert re.fullmatch(
        r"killed agent 'look-bot' until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in (59 min|1 h)\) "
        r"\(version \d+\): a look",
        killed.stdout.strip(),
    ), killed.stdout
    record = json.loads(server.cli(operator, "active", "--json").stdout)["data"][0]
    expires = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    killed_at = datetime.fromisoformat(record["killed_at"].replace("Z", "+00:00"))
    assert expires - killed_at == pytest.approx(timedelta(hours=1), abs=timedelta(seconds=2))


def test_stop_all_and_resume_all(server: Server) -> None:
    org = f"org_{os.urandom(4).hex()}"
    admin = server.key("admin", org=org)
    operator = server.key("operator", org=org)
    unconfirmed = server.cli(admin, "stop-all", "--reason", "incident 42")
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.stderr, unconfirmed
    refused = server.cli(operator, "stop-all", "--reason", "incident 42", "--yes")
    assert refused.code == 1 and "'admin' scope" in refused.stderr, refused
    stopped = server.cli(admin, "stop-all", "--reason", "incident 42", "--yes")
    assert stopped.code == 0, stopped
    assert stopped.stdout.strip() == f"killed organization '{org}' (version 1): incident 42"
    status = json.loads(server.cli(operator, "check", "organization", org, "--json").stdout)
    assert status["is_killed"] is True
    again = server.cli(admin, "stop-all", "--reason", "again", "--yes")
    assert again.code == 3, again
    resumed = server.cli(admin, "resume-all")
    assert resumed.code == 0 and resumed.stdout.startswith(f"revived organization '{org}'")
    assert server.cli(admin, "resume-all").code == 3


def test_kill_of_a_killed_target_says_who_when_and_why(server: Server, operator: str) -> None:
    server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "Drained $3k in 4 minutes")
    again = server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "again")
    assert again.code == 3, again
    message = again.stderr.strip()
    assert message.startswith("Error: agent 'rogue-bot' is already killed by usr_ops (key ag_")
    assert ", reason: Drained $3k in 4 minutes" in message and " at 20" in message
    assert again.stdout == ""


def test_revive_of_a_live_target_is_not_found(server: Server, operator: str) -> None:
    result = server.cli(operator, "revive", "agent", "rogue-bot")
    assert result.code == 3, result
    assert result.stderr.strip() == "Error: agent 'rogue-bot' is not killed"
    assert server.cli(operator, "revive", "agent", "rogue-bot", "--json").code == 3


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["kill", "agent", "x" * 300], ["'ID'", "256 characters"]),
        (["kill", "agent", "x", "--reason", "r" * 2001], ["'--reason'", "2000 characters"]),
        (["kill", "robot", "x"], ["'TYPE'", "robot"]),
        (["kill", "agent"], ["Missing argument 'ID'"]),
        (["kill", "agent", "x", "--for", "an hour"], ["'--for'", "1h30m"]),
        (["kill", "agent", "x", "--for", "400d"], ["'--for'", "366 days"]),
        (["interventions", "--since", "yesterday"], ["'--since'", "15m"]),
        (["interventions", "--limit", "0"], ["'--limit'"]),
        (["audit", "--action", "delete"], ["'--action'"]),
        (["tail", "--count", "0"], ["'--count'"]),
    ],
)
def test_invalid_input_is_a_usage_error_naming_the_field(
    server: Server, operator: str, args: list[str], names: list[str]
) -> None:
    result = server.cli(operator, *args)
    assert result.code == 2, result
    for name in names:
        assert name in result.stderr, result


def test_unreachable_server_names_the_url_tried() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("active", "--url", url, "--api-key", "ag_x")
    assert result.code == 1, result
    assert f"cannot reach the agentguard server at {url}/api/v1/kill-switch/active" in result.stderr
    assert "connection refused" in result.stderr
    bad = run("active", "--url", "ftp://example.org")
    assert bad.code == 2 and "'--url'" in bad.stderr


def test_credentials_refused(server: Server) -> None:
    missing = server.cli(None, "active")
    assert missing.code == 1, missing
    assert "the server refused the credentials: missing credentials" in missing.stderr
    assert "use --api-key or set AGENTGUARD_API_KEY" in missing.stderr
    wrong = server.cli("ag_AAAAAAAA_" + "A" * 40, "check", "agent", "x")
    assert wrong.code == 1 and "invalid or revoked API key" in wrong.stderr


def test_missing_scope_names_the_scope(server: Server) -> None:
    reader = server.key("read")
    result = server.cli(reader, "kill", "agent", "x")
    assert result.code == 1, result
    assert "permission denied: this request needs the 'operator' scope (or admin)" in result.stderr
    assert "the credential has read" in result.stderr
    agent = server.key("agent")
    audit = server.cli(agent, "audit")
    assert audit.code == 1 and "needs the 'operator' scope" in audit.stderr
    keys = server.cli(reader, "keys", "list")
    assert keys.code == 1 and "needs the 'admin' scope" in keys.stderr


def test_connection_from_options_or_environment(server: Server, operator: str) -> None:
    flags = run("kill", "run", "r-7", "--url", server.url, "--api-key", operator)
    assert flags.code == 0, flags
    env = server.cli(operator, "check", "run", "r-7", "--json")
    assert env.json()["is_killed"] is True
    # Options win over the environment.
    other = run(
        "check", "run", "r-7", "--json", "--api-key", server.key("read"), env=server.env(operator)
    )
    assert other.json()["is_killed"] is False  # another organization's key
    mounted = run("active", "--url", server.url + "/guard", "--api-key", operator)
    assert mounted.code == 1 and "no such endpoint" in mounted.stderr


def test_calls_stopped_in_flight_are_listed_with_how_long_they_ran(server: Server) -> None:
    org = "org_stopped"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    guard = Guard(server.url, api_key=agent_key, agent_id="bulk-mailer")
    try:
        assert guard.wait_until_synced(10)
        heartbeat = guard.start_heartbeat(interval=0.2)
        killed = threading.Event()

        @guard.guarded_action
        def bulk_send() -> None:
            killed.set()
            for _ in range(3000):
                guard.raise_if_killed()
                time.sleep(0.01)

        def kill() -> None:
            assert killed.wait(10)
            server.cli(operator, "kill", "agent", "bulk-mailer", "--reason", "wrong list")

        threading.Thread(target=kill).start()
        with pytest.raises(PolicyViolationError) as caught:
            bulk_send()
        assert caught.value.cancelled
        assert guard.flush()
        eventually(lambda: heartbeat.report().cancelled == 1 and heartbeat.sent >= 3)
    finally:
        guard.close()

    table = server.cli(operator, "interventions", "--type", "CANCELLED")
    assert table.code == 0, table
    header, row = table.stdout.splitlines()
    words = row.split()
    assert words[words.index("CANCELLED") :][:4] == [
        "CANCELLED",
        "bulk_send",
        "agent/bulk-mailer",
        "bulk-mailer",
    ]
    assert re.search(r"\d+(\.\d)? (ms|s)  +wrong list$", row), row
    page = server.cli(operator, "interventions", "--json").json()
    assert [i["type"] for i in page["data"]] == ["CANCELLED"]
    assert page["data"][0]["ran_for_ms"] == pytest.approx(caught.value.ran_for * 1000, abs=1)
    agents = server.cli(operator, "agents", "bulk-mailer", "--json").json()
    assert (agents["executed"], agents["cancelled"], agents["failed"]) == (1, 1, 0)
    listing = server.cli(operator, "agents").stdout.splitlines()
    assert listing[0].split()[5:9] == ["EXECUTED", "REFUSED", "STOPPED", "FAILED"]
    assert "1 stopped by a kill" in server.cli(operator, "agents", "bulk-mailer").stdout


def test_interventions_and_audit(server: Server) -> None:
    org = "org_blocks"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    server.cli(operator, "kill", "agent", "email-campaign", "--reason", "broken link")
    guard = Guard(server.url, api_key=agent_key, mode="strict", agent_id="email-campaign")
    try:

        @guard.guarded_action
        def send_email(to: str) -> None:
            raise AssertionError("a killed agent's call ran")

        for to in ("a@example.org", "b@example.org"):
            with pytest.raises(PolicyViolationError):
                send_email(to)
        assert guard.flush()
    finally:
        guard.close()

    table = server.cli(operator, "interventions")
    assert table.code == 0, table
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "WHEN", "TYPE", "ACTION", "TARGET", "AGENT", "RUN", "INSTANCE", "RAN", "FOR", "REASON",
    ]  # fmt: skip
    assert len(rows) == 2
    assert rows[0].split()[rows[0].split().index("HARD_BLOCK") :][:4] == [
        "HARD_BLOCK",
        "send_email",
        "agent/email-campaign",
        "email-campaign",
    ]
    assert rows[0].endswith("broken link")
    page = server.cli(operator, "interventions", "--json").json()
    assert page["count"] == 2
    assert {(i["type"], i["action"], i["target_id"]) for i in page["data"]} == {
        ("HARD_BLOCK", "send_email", "email-campaign")
    }
    assert page["data"][0]["instance_id"] == guard.instance_id
    filtered = server.cli(
        operator,
        "interventions", "--target-type", "agent", "--target-id", "email-campaign",
        "--type", "HARD_BLOCK", "--action", "send_email", "--since", "1h", "--json",
    ).json()  # fmt: skip
    assert filtered["count"] == 2
    assert server.cli(operator, "interventions", "--action", "other", "--json").json() == {
        "data": [],
        "count": 0,
    }
    assert server.cli(operator, "interventions", "--target-id", "x").stdout.strip() == (
        "no interventions"
    )
    future = server.cli(operator, "interventions", "--since", "2999-01-01T00:00:00Z", "--json")
    assert future.json()["count"] == 0
    one = server.cli(operator, "interventions", "--limit", "1")
    assert "(1 of 2; see --limit and --skip)" in one.stdout

    server.cli(operator, "revive", "agent", "email-campaign")
    audit = server.cli(operator, "audit")
    assert audit.code == 0, audit
    header, *rows = audit.stdout.splitlines()
    assert header.split() == ["WHEN", "ACTION", "TARGET", "ACTOR", "VERSION", "DETAIL"]
    actions = [r.split()[r.split().index("ago") + 1 if "ago" in r.split() else 2] for r in rows]
    assert actions[:2] == ["revive", "kill"]
    entries = server.cli(operator, "audit", "--action", "kill", "--json").json()
    assert [(e["action"], e["target_id"], e["version"]) for e in entries["data"]] == [
        ("kill", "email-campaign", 1)
    ]
    by_target = server.cli(
        operator, "audit", "--target-type", "agent", "--target-id", "email-campaign",
        "--since", "10m", "--json",
    ).json()  # fmt: skip
    assert [e["action"] for e in by_target["data"]] == ["revive", "kill"]
    keys = server.cli(operator, "audit", "--target-type", "api_key", "--json").json()
    assert {e["action"] for e in keys["data"]} == {"key.create"}


def test_keys_over_http(server: Server) -> None:
    admin = server.key("admin", org="org_keys", owner="usr_admin")
    created = server.cli(admin, "keys", "create", "--scope", "read", "--name", "dash", "--json")
    assert created.code == 0, created
    key = created.json()
    assert key["scopes"] == ["read"] and key["owner"] == "usr_admin" and key["name"] == "dash"
    assert key["secret"].startswith(key["id"] + "_")
    human = server.cli(admin, "keys", "create", "--scope", "operator", "--scope", "agent",
                       "--owner", "usr_bot")  # fmt: skip
    assert human.code == 0, human
    intro, secret = human.stdout.strip().splitlines()
    assert intro.endswith(
        "(scopes agent,operator, owner usr_bot); its secret is shown only this once:"
    )
    assert server.cli(secret, "check", "agent", "x").code == 0  # the new key works

    listed = server.cli(admin, "keys", "list", "--json").json()
    assert listed["count"] == 3 and all("secret" not in k for k in listed["data"])
    table = server.cli(admin, "keys", "list")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "SCOPES", "AGENTS", "OWNER", "NAME", "CREATED", "STATE"]
    assert len(rows) == 3 and all(r.endswith("active") for r in rows)

    revoked = server.cli(admin, "keys", "revoke", key["id"])
    assert revoked.code == 0 and revoked.stdout.strip() == f"revoked {key['id']}"

    assert server.cli(key["secret"], "active").code == 1  # refused at once
    again = server.cli(admin, "keys", "revoke", key["id"])
    assert again.code == 3 and "already revoked" in again.stderr
    missing = server.cli(admin, "keys", "revoke", "ag_nothere1", "--json")
    assert missing.code == 3 and "no API key 'ag_nothere1'" in missing.stderr
    after = server.cli(admin, "keys", "list", "--json").json()
    assert [k["revoked_at"] is not None for k in after["data"]].count(True) == 1

    # --org belongs to the database; both ways at once is a usage error.
    org = server.cli(admin, "keys", "list", "--org", "other")
    assert org.code == 2 and "--org works only with --database-url" in org.stderr
    both = run("keys", "list", "--url", server.url, "--database-url", server.database_url)
    assert both.code == 2 and "not both" in both.stderr


def test_agent_keys_name_their_agents_over_http(server: Server) -> None:
    admin = server.key("admin", org="org_agents", owner="usr_admin")
    made = server.cli(admin, "keys", "create", "--scope", "agent", "--agent", "email-campaign",
                      "--agent", "billing-*")  # fmt: skip
    assert made.code == 0, made
    assert "for billing-*,email-campaign);" in made.stdout.splitlines()[0]
    secret = made.stdout.strip().splitlines()[-1]
    beat = {"instance_id": "i-1", "interval": 10, "executed": 0, "refused": 0, "failed": 0,
            "cost_usd": 0, "version": 0}  # fmt: skip
    api = f"{server.url}/api/v1/heartbeats"
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(api, json={**beat, "agent_id": "billing-eu"}, headers=headers).is_success
    refused = httpx.post(api, json={**beat, "agent_id": "payments"}, headers=headers)
    assert refused.status_code == 403 and refused.json()["field"] == "agent_id"
    ack = {"instance_id": "i-1", "version": 0, "agent_id": "payments"}
    acked = httpx.post(f"{server.url}/api/v1/kill-switch/ack", json=ack, headers=headers)
    assert acked.status_code == 403
    audited = server.cli(admin, "audit", "--action", "ack.refused", "--json").json()
    assert audited["count"] == 1 and "'payments'" in audited["data"][0]["detail"]
    anyone = server.cli(admin, "keys", "create", "--scope", "agent", "--agent", "*", "--json")
    assert anyone.json()["agents"] == ["*"]
    bare = server.cli(admin, "keys", "create", "--scope", "agent")
    assert bare.code == 0 and "names no --agent" in bare.stderr
    table = server.cli(admin, "keys", "list").stdout
    assert "billing-*,email-campaign" in table and "any agent" in table and "no agent" in table
    listed = server.cli(admin, "keys", "list", "--json").json()["data"]
    assert sorted(str(k["agents"]) for k in listed) == sorted(
        ["['billing-*', 'email-campaign']", "['*']", "[]", "[]"]
    )
    wrong = server.cli(admin, "keys", "create", "--scope", "read", "--agent", "x")
    assert wrong.code == 2 and "--agent goes with --scope agent" in wrong.stderr


def test_keys_on_the_database_from_the_environment(server: Server) -> None:
    env = {"AGENTGUARD_DATABASE_URL": server.database_url}
    created = run("keys", "create", "--org", "org_env", "--owner", "usr_x", "--scope", "read",
                  "--json", env=env)  # fmt: skip
    assert created.code == 0, created
    listed = run("keys", "list", "--org", "org_env", env=env)
    assert created.json()["id"] in listed.stdout
    no_owner = run("keys", "create", "--scope", "read", env=env)
    assert no_owner.code == 2 and "--owner is required" in no_owner.stderr
    # An explicit --url/--api-key goes over HTTP even with the variable set.
    http = run("keys", "list", "--api-key", server.admin_key, "--json",
               env={**env, "AGENTGUARD_URL": server.url})  # fmt: skip
    assert http.code == 0 and all(k["organization_id"] == "default" for k in http.json()["data"])


def test_help_documents_connection_exit_codes_and_completion() -> None:
    result = run("--help")
    assert result.code == 0
    for text in (
        "AGENTGUARD_URL",
        "AGENTGUARD_API_KEY",
        "0  success",
        "1  error",
        "2  usage",
        "3  conflict or not found",
        "_AGENTGUARD_COMPLETE=bash_source agentguard",
    ):
        assert text in result.stdout, text
    for command in ("kill", "revive", "check", "active", "agents", "interventions", "audit",
                    "tail", "keys", "db", "serve", "demo"):  # fmt: skip
        assert f"\n  {command} " in result.stdout, command
    kill = run("kill", "--help")
    assert "--wait" in kill.stdout and "--timeout" in kill.stdout and "Exit code 3" in kill.stdout


def _complete(env: dict[str, str], line: str) -> list[str]:
    words = line.split(" ")
    script = Path(COMMAND[0]).with_name("agentguard")
    done = subprocess.run(
        [str(script)],
        capture_output=True,
        text=True,
        env=clean_env(
            _AGENTGUARD_COMPLETE="bash_complete",
            COMP_WORDS=line,
            COMP_CWORD=str(len(words) - 1),
            **env,
        ),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return [item.split(",", 1)[1] for item in done.stdout.splitlines() if item]


def test_shell_completion(server: Server, operator: str) -> None:
    script = Path(COMMAND[0]).with_name("agentguard")
    assert script.exists(), "the console script is installed with the package"
    for shell, marker in (
        ("bash", "_agentguard_completion"),
        ("zsh", "#compdef agentguard"),
        ("fish", "complete --no-files --command agentguard"),
    ):
        done = subprocess.run(
            [str(script)],
            capture_output=True,
            text=True,
            env=clean_env(_AGENTGUARD_COMPLETE=f"{shell}_source"),
            timeout=30,
        )
        assert done.returncode == 0 and marker in done.stdout, (shell, done.stdout)
    assert "interventions" in _complete({}, "agentguard inter")
    assert _complete({}, "agentguard kill ") == [
        "agent", "run", "mission", "tool", "organization", "selector"
    ]  # fmt: skip
    server.cli(operator, "kill", "agent", "rogue-bot")
    server.cli(operator, "kill", "agent", "rouge-2")
    server.cli(operator, "kill", "run", "r-1")
    env = server.env(operator)
    assert sorted(_complete(env, "agentguard revive agent ro")) == ["rogue-bot", "rouge-2"]
    assert _complete(env, "agentguard revive run ") == ["r-1"]
    nowhere = {"AGENTGUARD_URL": f"http://127.0.0.1:{free_port()}"}
    assert _complete(nowhere, "agentguard revive agent ") == []  # no server: quietly nothing


def test_demo_runs_the_demo_module() -> None:
    result = run("demo", timeout=90)
    assert result.code == 0, result
    assert "OK: every number agrees." in result.stdout


def test_console_script_matches_the_module(server: Server, operator: str) -> None:
    script = Path(COMMAND[0]).with_name("agentguard")
    done = subprocess.run(
        [str(script), "check", "agent", "x", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(**server.env(operator)),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert '"is_killed": false' in done.stdout
    assert os.access(script, os.X_OK)


def test_a_run_kill_until_the_run_ends(server: Server, operator: str) -> None:
    killed = server.cli(operator, "kill", "run", "run-7", "--reason", "looping", "--until-run-ends")
    assert killed.code == 0, killed
    finished = httpx.post(
        f"{server.url}/api/v1/runs/run-7/finish", headers={"Authorization": f"Bearer {operator}"}
    ).json()
    assert finished["ended"]["target_id"] == "run-7"
    assert server.cli(operator, "check", "run", "run-7").stdout.strip() == (
        "run 'run-7' is not killed"
    )
    wrong = server.cli(operator, "kill", "agent", "bot", "--until-run-ends")
    assert wrong.code == 2 and "until" in wrong.stderr, wrong


def test_governed_revive_from_the_terminal(tmp_path: Path) -> None:
    """serve --revive-approvals 2: a revive becomes a request; another person approves it."""
    governed = start_server(tmp_path, "--revive-approvals", "agent:pay*=2")
    try:
        org = "org_governed"
        alice = governed.key("operator", org=org, owner="alice")
        alice_again = governed.key("operator", org=org, owner="alice")
        bob = governed.key("operator", org=org, owner="bob")
        assert governed.cli(alice, "kill", "agent", "payments", "-r", "drained").code == 0
        asked = governed.cli(alice, "revive", "agent", "payments", "-r", "fixed")
        assert asked.code == 0, asked
        match = re.match(r"revive request ([0-9a-f-]+) created: agent 'payments' stays killed "
                         r"until 1 other person approves it \(agentguard revive --approve \1\)",
                         asked.stdout)  # fmt: skip
        assert match, asked.stdout
        rid = match[1]
        listed = governed.cli(bob, "revive", "--pending")
        assert rid in listed.stdout and "alice" in listed.stdout and "fixed" in listed.stdout
        assert governed.cli(bob, "revive", "--pending", "--json").json()["count"] == 1
        own = governed.cli(alice_again, "revive", "--approve", rid)
        assert own.code != 0 and "another person" in own.stderr, own
        assert governed.cli(alice, "check", "agent", "payments", "--json").json()["is_killed"]
        approved = governed.cli(bob, "revive", "--approve", rid, "-r", "checked")
        assert approved.code == 0, approved
        assert approved.stdout.strip() == f"approved revive request {rid}: revived agent 'payments'"
        assert not governed.cli(bob, "check", "agent", "payments", "--json").json()["is_killed"]
        audit = governed.cli(bob, "audit", "--action", "revive.approve", "--json").json()
        assert [e["actor"].split()[0] for e in audit["data"]] == ["bob"]
        assert governed.cli(bob, "revive", "--pending").stdout.strip() == (
            "no revive requests waiting"
        )
        # Targets no rule matches revive at once, as before.
        governed.cli(alice, "kill", "agent", "mailer")
        assert governed.cli(alice, "revive", "agent", "mailer").stdout.startswith("revived ")
        both = governed.cli(bob, "revive", "agent", "x", "--pending")
        assert both.code == 2 and "takes no TYPE or ID" in both.stderr
    finally:
        stop(governed.popen)


def test_a_remote_guard_revive_that_needs_approval_raises(tmp_path: Path) -> None:
    """Guard(url).revive on a governed server: RevivePendingError with the request; no revive."""
    from agentguard.errors import RevivePendingError

    governed = start_server(tmp_path, "--revive-approvals", "2")
    try:
        key = governed.key("operator", org="org_guard", owner="olga")
        guard = Guard(governed.url, api_key=key)
        try:
            guard.kill("agent", "bot", reason="look")
            with pytest.raises(RevivePendingError) as raised:
                guard.revive("agent", "bot")
            assert raised.value.request.status == "pending"
            assert "needs approval" in str(raised.value) and raised.value.request.id in str(
                raised.value
            )
            assert guard.check("agent", "bot").is_killed
        finally:
            guard.close()
    finally:
        stop(governed.popen)
