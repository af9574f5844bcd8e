"""What only the SQL store does, on SQLite and PostgreSQL (the KillStore contract it shares with
MemoryStore: tests/test_store.py)."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard.records import utcnow
from agentguard.scope import Scope
from agentguard.server.store.acks import AckReport
from agentguard.server.store.killstate import VersionAheadError


@pytest.fixture
def store(server: Any) -> Any:
    return server.store


def test_versions_of_several_organizations_at_once(store: Any) -> None:
    store.kill("org", "agent", "a", reason=None, actor="u")
    store.revive("org", "agent", "a", actor="u")
    store.kill("other", "agent", "a", reason=None, actor="u")
    assert store.versions(["org", "other", "none"]) == {"org": 2, "other": 1, "none": 0}


def test_guard_checkpoints_through_the_server(server: Any) -> None:
    from agentguard import Guard

    guard = Guard(server, organization_id="org_a")
    guard.checkpoint("campaign", {"batch": 3, "sent": ["a", "b"]})
    assert Guard(server, organization_id="org_a").load_checkpoint("campaign") == {
        "batch": 3,
        "sent": ["a", "b"],
    }
    assert Guard(server, organization_id="org_b").load_checkpoint("campaign", "none") == "none"


def test_acks_stored_together_answer_as_if_stored_one_by_one(store: Any) -> None:
    bot = store.kill("org", "agent", "bot", reason=None, actor="u")  # version 1
    store.kill("org", "agent", "other", reason=None, actor="u")  # 2: not bot's instances
    tool = store.kill("org", "tool", "send_email", reason=None, actor="u")  # 3: everyone's
    now = utcnow()

    def report(instance: str, version: int, org: str = "org") -> AckReport:
        return AckReport(org, instance, version, Scope("bot", None, None), now, now)

    results = store.record_acks(
        [
            report("b1", 1),
            report("b2", 3),
            report("b1", 3),  # the same instance again, later: only what is new to it
            report("b3", 4),  # ahead of the organization's version 3
            report("x1", 1, org="quiet"),  # an organization still at version 0
        ]
    )
    assert isinstance(results[3], VersionAheadError) and isinstance(results[4], VersionAheadError)
    acked = [{a.kill_switch_id for a in r[1]} for r in results[:3]]
    assert acked == [
        {bot.kill_switch.id},
        {bot.kill_switch.id, tool.kill_switch.id},
        {tool.kill_switch.id},
    ]
    assert [r[0].version for r in results[:3]] == [1, 3, 3]
    assert [r[1] for r in store.record_acks([report("b1", 3), report("b2", 2)])] == [[], []]
    rows = {r.instance_id: r.version for r in store.instances_of_kill("org", "tool", "x")}
    assert rows == {"b1": 3, "b2": 3}  # nothing written for the reports that were ahead
    assert set(store.kill_acks("org", bot.kill_switch.id)[1]) == {"b1", "b2"}
    assert set(store.kill_acks("org", tool.kill_switch.id)[1]) == {"b1", "b2"}


def test_start_warms_up_without_writing(server: Any) -> None:
    """The start compiles a kill and a revive in a rolled-back transaction: no row remains."""
    from sqlalchemy import func, select

    from agentguard.server.store.tables import metadata

    server.start()
    with server.database.read() as conn:
        rows = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }
    assert set(rows.values()) == {0}, rows
    first = server.store.kill("org_a", "agent", "bot", reason=None, actor="usr_ops")
    assert first.version == 1
