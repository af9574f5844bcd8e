"""``agentguard db prune``: old fleet rows go, in one transaction; the audit trail stays."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, insert, select

from agentguard.protocol import HeartbeatReport
from agentguard.scope import Scope
from agentguard.server.store.tables import (
    audit_log,
    console_sign_outs,
    drill_acks,
    drills,
    instances,
    interventions,
    kill_acks,
    kill_changes,
    kill_switches,
    ledger_entries,
    usage,
    webhook_deliveries,
)
from support.db_rows import intervention_row


def prune(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "db", "prune", "--database-url", database_url]
        + list(args),
        capture_output=True,
        text=True,
        timeout=60,
    )


def fill(server: Any) -> None:
    """Two instances of one agent (one silent for 40 days), each with usage and an ack of a kill,
    an old and a new intervention, the sign-outs of an expired and a live console session, and
    webhook deliveries: old and sent, old and still pending, new and sent; and two old drills of
    the agent, each with an answer (the newer one is its last drill).
    "New" is now: the test reads the fleet's health right after."""
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=40)
    store = server.store
    change = store.kill("org_a", "agent", "mailer", reason="runaway", actor="usr_ops")
    for instance_id, when in (("i-old", old), ("i-new", now)):
        report = HeartbeatReport(
            instance_id=instance_id, agent_id="mailer", interval=10, executed=5, cost_usd=0.5
        )
        store.record_heartbeat("org_a", report, now=when, acked_at=when)
        store.record_ack(
            "org_a", instance_id, change.version, Scope("mailer"), now=when, acked_at=when
        )
    with server.database.write() as conn:
        for session_id, expires in (("sid-expired", now - timedelta(hours=1)), ("sid-live", now)):
            conn.execute(
                insert(console_sign_outs).values(
                    session_id=session_id, expires_at=expires + timedelta(minutes=10)
                )
            )
        for iv_id, when in (("iv-old", old), ("iv-new", now)):
            row = intervention_row(iv_id, "org_a", target_id="mailer", when=when)
            conn.execute(insert(interventions).values(**row))
        for entry_id, when in (("entry-old", old), ("entry-new", now)):  # AgentSentinel ledgers
            conn.execute(
                insert(ledger_entries).values(
                    organization_id="org_a", id=entry_id, agent_id="mailer", received_at=when
                )
            )
        for n, (status, when) in enumerate(
            (("delivered", old), ("pending", old), ("delivered", now))
        ):
            conn.execute(
                insert(webhook_deliveries).values(
                    organization_id="org_a",
                    webhook_id="wh_1",
                    event_id=f"msg_{n}",
                    event="kill",
                    subject="ks",
                    payload="{}",
                    status=status,
                    attempts=1,
                    created_at=when,
                    next_attempt_at=when if status == "pending" else None,
                )  # fmt: skip
            )
        for drill_id, when in (("d-older", old), ("d-last", old + timedelta(days=1))):
            conn.execute(
                insert(drills).values(
                    id=drill_id,
                    organization_id="org_a",
                    target_type="agent",
                    target_id="mailer",
                    status="armed",
                    started_by="usr_ops",
                    started_at=when,
                    deadline_at=when,
                    finished_at=when,
                    live=1,
                    acknowledged=1,
                )  # fmt: skip
            )
            conn.execute(
                insert(drill_acks).values(
                    organization_id="org_a",
                    drill_id=drill_id,
                    instance_id="i-old",
                    agent_id="mailer",
                    acknowledged_at=when,
                    latency_ms=3.0,
                )  # fmt: skip
            )


def counts(server: Any) -> dict[str, int]:
    tables = [
        instances,
        kill_acks,
        usage,
        interventions,
        console_sign_outs,
        kill_switches,
        kill_changes,
        audit_log,
        ledger_entries,
        webhook_deliveries,
        drills,
        drill_acks,
    ]
    with server.database.read() as conn:
        return {
            t.name.removeprefix("agentguard_"): int(
                conn.execute(select(func.count()).select_from(t)).scalar_one()
            )
            for t in tables
        }


def test_prune_deletes_old_fleet_rows_and_keeps_the_audit_trail(
    make_server: Any, database_url: str
) -> None:
    server = make_server(database_url)
    fill(server)
    before = counts(server)
    assert before == {
        "instances": 2,
        "kill_acks": 2,
        "usage": 2,
        "interventions": 2,
        "console_sign_outs": 2,
        "kill_switches": 1,
        "kill_changes": 1,
        "audit_log": 1,
        "ledger_entries": 2,
        "webhook_deliveries": 3,
        "drills": 2,
        "drill_acks": 2,
    }

    dry = prune(database_url, "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(
        "would delete 1 acknowledgements, 1 instances, 1 usage, 1 expired console sign-outs, "
        "1 AgentSentinel ledger entries, "
        "1 finished webhook deliveries, 1 answers of superseded drills, 1 superseded drills ("
    )
    assert counts(server) == before

    done = prune(database_url, "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "deleted 1 acknowledgements, 1 instances, 1 usage, 1 expired console sign-outs, "
        "1 AgentSentinel ledger entries, "
        "1 finished webhook deliveries, 1 answers of superseded drills, 1 superseded drills ("
    )
    assert counts(server) == {
        **before,
        "instances": 1,
        "kill_acks": 1,
        "usage": 1,
        "console_sign_outs": 1,
        "ledger_entries": 1,
        "webhook_deliveries": 2,
        "drills": 1,
        "drill_acks": 1,
    }
    assert server.store.last_drills("org_a", ["mailer"])["mailer"].id == "d-last"
    agents = server.fleet.agents("org_a")
    assert [i.instance_id for i in agents[0].instances] == ["i-new"]
    status = server.fleet.acks("org_a", "agent", "mailer")
    assert [i.instance_id for i in status.instances] == ["i-new"]

    with_interventions = prune(database_url, "--older-than", "30d", "--interventions")
    assert with_interventions.returncode == 0, with_interventions.stderr
    assert "0 instances" in with_interventions.stdout
    assert "1 interventions" in with_interventions.stdout
    with server.database.read() as conn:
        left = conn.execute(select(interventions.c.id)).scalars().all()
    assert left == ["iv-new"]


def test_prune_refuses_a_bad_or_too_short_age(make_server: Any, database_url: str) -> None:
    server = make_server(database_url)
    fill(server)
    before = counts(server)
    for age, words in (("2h", "under a day"), ("soon", "not a duration"), ("", "not a duration")):
        result = prune(database_url, "--older-than", age)
        assert result.returncode == 2, (age, result.stdout, result.stderr)
        assert "--older-than" in result.stderr and words in result.stderr, result.stderr
    missing = prune(database_url)
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    assert counts(server) == before


def test_prune_reports_long_active_kills_and_trims_the_change_log_on_request(
    make_server: Any, database_url: str
) -> None:
    server = make_server(database_url)
    store = server.store
    store.kill("org_a", "run", "old-run", reason="looping", actor="usr_ops")
    store.kill("org_b", "agent", "old-bot", reason=None, actor="usr_ops")
    store.kill("org_a", "agent", "new-bot", reason=None, actor="usr_ops")
    old = datetime.now(timezone.utc) - timedelta(days=40)
    with server.database.write() as conn:
        long_ago = kill_switches.c.target_id.in_(["old-run", "old-bot"])
        conn.execute(kill_switches.update().where(long_ago).values(killed_at=old))
        conn.execute(
            kill_changes.update().where(kill_changes.c.version == 1).values(created_at=old)
        )
    done = prune(database_url, "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert "change-log" not in done.stdout
    assert "kept 2 kills active since before then" in done.stdout, done.stdout
    assert counts(server)["kill_switches"] == 3 and counts(server)["kill_changes"] == 3
    trimmed = prune(database_url, "--older-than", "30d", "--change-log")
    assert trimmed.returncode == 0, trimmed.stderr
    # Version 1 of both organizations was written "40 days ago".
    assert "2 change-log entries" in trimmed.stdout, trimmed.stdout
    assert store.changes_since("org_a", 0) is None
    assert [c.version for c in store.changes_since("org_a", 1) or []] == [2]
