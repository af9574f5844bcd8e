"""SQLStore meets the KillStore contract of MemoryStore, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import (
    AlreadyKilledError,
    Intervention,
    InvalidInputError,
    KillStore,
    NotKilledError,
)
from agentguard.records import utcnow
from agentguard.scope import Scope
from agentguard.server.store.acks import AckReport
from agentguard.server.store.killstate import VersionAheadError


@pytest.fixture
def store(server: Any) -> Any:
    return server.store


def test_sql_store_is_a_kill_store(store: Any) -> None:
    assert isinstance(store, KillStore)


def test_versions_changes_and_snapshots(store: Any) -> None:
    a = store.kill("org", "agent", "a", reason="x", actor="u")
    b = store.kill("org", "run", "r", reason=None, actor="u")
    c = store.revive("org", "agent", "a", actor="v")
    store.kill("other", "agent", "a", reason=None, actor="u")
    assert [a.version, b.version, c.version] == [1, 2, 3]
    assert (a.kind, c.kind) == ("kill", "revive") and c.kill_switch.id == a.kill_switch.id
    snap = store.snapshot("org")
    assert snap.version == 3 and [ks.target_id for ks in snap.active] == ["r"]
    assert store.snapshot("other").version == 1
    assert [ch.version for ch in store.changes_since("org", 1)] == [2, 3]
    assert store.changes_since("org", 3) == []
    assert [ch.version for ch in store.changes_since("org", 0, limit=2)] == [1, 2]
    assert store.get_active("org", "agent", "a") is None
    assert store.get_active("other", "agent", "a") is not None
    assert store.versions(["org", "other", "none"]) == {"org": 3, "other": 1, "none": 0}


def test_kill_twice_raises_with_the_existing_record(store: Any) -> None:
    first = store.kill("org", "tool", "send_email", reason="spam", actor="u")
    with pytest.raises(AlreadyKilledError) as caught:
        store.kill("org", "tool", "send_email", reason="again", actor="v")
    assert caught.value.kill_switch == first.kill_switch
    assert store.snapshot("org").version == 1 and store.list_audit("org")[1] == 1


def test_revive_unknown_target_raises_and_writes_nothing(store: Any) -> None:
    with pytest.raises(NotKilledError):
        store.revive("org", "agent", "nobody", actor="u")
    assert store.snapshot("org").version == 0 and store.list_audit("org")[1] == 0


def test_invalid_input_writes_nothing(store: Any) -> None:
    with pytest.raises(InvalidInputError):
        store.kill("org", "robot", "a", reason=None, actor="u")
    with pytest.raises(InvalidInputError):
        store.kill("org", "agent", "a", reason="x" * 2001, actor="u")
    assert store.snapshot("org").version == 0


def test_list_active_pages_newest_first(store: Any) -> None:
    for i in range(5):
        store.kill("org", "agent", f"a{i}", reason=None, actor="u")
    page, count = store.list_active("org", skip=1, limit=2)
    assert count == 5 and [ks.target_id for ks in page] == ["a3", "a2"]


def test_interventions_are_idempotent_by_id_and_filterable(store: Any) -> None:
    iv = Intervention(action="send", target_type="agent", target_id="a")
    other = Intervention(action="pay", target_type="run", target_id="r")
    assert store.add_interventions("org", [iv, other]) == 2
    assert store.add_interventions("org", [iv]) == 0
    assert store.list_interventions("org")[1] == 2
    assert [i.id for i in store.list_interventions("org", action="pay")[0]] == [other.id]
    assert store.list_interventions("other")[1] == 0
    assert store.list_interventions("org")[0][0] in (iv, other)


def test_audit_records_every_change_with_actor(store: Any) -> None:
    store.kill("org", "agent", "a", reason="why", actor="usr_a", request_id="req-1")
    store.revive("org", "agent", "a", actor="usr_b")
    entries, count = store.list_audit("org")
    assert count == 2
    assert [(e.action, e.actor, e.version) for e in entries] == [
        ("revive", "usr_b", 2),
        ("kill", "usr_a", 1),
    ]
    assert entries[1].request_id == "req-1" and entries[1].detail == "why"
    assert store.list_audit("org", action="kill")[1] == 1


def test_checkpoints_are_stored_per_org_and_replaced(store: Any) -> None:
    assert store.load_checkpoint("org", "run-1") is None
    store.save_checkpoint("org", "run-1", '{"sent":10}')
    store.save_checkpoint("org", "run-1", '{"sent":20}')
    store.save_checkpoint("other", "run-1", '{"sent":1}')
    assert store.load_checkpoint("org", "run-1") == '{"sent":20}'
    assert store.load_checkpoint("other", "run-1") == '{"sent":1}'


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
