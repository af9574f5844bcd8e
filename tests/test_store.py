"""The KillStore contract, one suite run against every store: MemoryStore, and the server's SQL
store on SQLite and on PostgreSQL (the ``kill_store`` fixture of tests/conftest.py). What only one
store does is tested at the end of this file (memory) and in tests/server/store/test_sqlstore.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from agentguard import (
    AlreadyKilledError,
    Intervention,
    InvalidInputError,
    KillStore,
    MemoryStore,
    NotKilledError,
)
from agentguard.records import utcnow


def test_is_a_kill_store(kill_store: KillStore) -> None:
    assert isinstance(kill_store, KillStore)


def test_concurrent_kills_of_one_target_have_one_winner(kill_store: KillStore) -> None:
    results: list[str] = []
    barrier = threading.Barrier(24)

    def kill() -> None:
        barrier.wait()
        try:
            kill_store.kill("org", "agent", "bot", reason=None, actor="u")
            results.append("ok")
        except AlreadyKilledError:
            results.append("conflict")

    threads = [threading.Thread(target=kill) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("conflict") == 23
    assert kill_store.snapshot("org").version == 1


def test_versions_changes_and_snapshots(kill_store: KillStore) -> None:
    store = kill_store
    a = store.kill("org", "agent", "a", reason="x", actor="u")
    b = store.kill("org", "run", "r", reason=None, actor="u")
    c = store.revive("org", "agent", "a", actor="v")
    store.kill("other", "agent", "a", reason=None, actor="u")
    assert [a.version, b.version, c.version] == [1, 2, 3]
    assert (a.kind, c.kind) == ("kill", "revive") and c.kill_switch.id == a.kill_switch.id
    snap = store.snapshot("org")
    assert snap.version == 3 and [ks.target_id for ks in snap.active] == ["r"]
    assert store.snapshot("other").version == 1
    assert [ch.version for ch in store.changes_since("org", 1) or []] == [2, 3]
    assert store.changes_since("org", 3) == []
    assert [ch.version for ch in store.changes_since("org", 0, limit=2) or []] == [1, 2]
    assert store.get_active("org", "agent", "a") is None
    assert store.get_active("other", "agent", "a") is not None


def test_kill_twice_raises_with_the_existing_record(kill_store: KillStore) -> None:
    store = kill_store
    first = store.kill("org", "tool", "send_email", reason="spam", actor="u")
    with pytest.raises(AlreadyKilledError) as caught:
        store.kill("org", "tool", "send_email", reason="again", actor="v")
    assert caught.value.kill_switch == first.kill_switch
    assert store.snapshot("org").version == 1 and store.list_audit("org")[1] == 1


def test_revive_unknown_target_raises_and_writes_nothing(kill_store: KillStore) -> None:
    with pytest.raises(NotKilledError):
        kill_store.revive("org", "agent", "nobody", actor="u")
    assert kill_store.snapshot("org").version == 0 and kill_store.list_audit("org")[1] == 0


def test_invalid_input_writes_nothing(kill_store: KillStore) -> None:
    with pytest.raises(InvalidInputError):
        kill_store.kill("org", "robot", "a", reason=None, actor="u")
    with pytest.raises(InvalidInputError):
        kill_store.kill("org", "agent", "a", reason="x" * 2001, actor="u")
    assert kill_store.snapshot("org").version == 0


def test_list_active_pages_newest_first(kill_store: KillStore) -> None:
    for i in range(5):
        kill_store.kill("org", "agent", f"a{i}", reason=None, actor="u")
    page, count = kill_store.list_active("org", skip=1, limit=2)
    assert count == 5 and [ks.target_id for ks in page] == ["a3", "a2"]


def test_interventions_are_idempotent_by_id_and_filterable(kill_store: KillStore) -> None:
    store = kill_store
    iv = Intervention(action="send", target_type="agent", target_id="a")
    other = Intervention(action="pay", target_type="run", target_id="r")
    assert store.add_interventions("org", [iv, other]) == 2
    assert store.add_interventions("org", [iv]) == 0
    assert store.list_interventions("org")[1] == 2
    assert [i.id for i in store.list_interventions("org", action="pay")[0]] == [other.id]
    assert store.list_interventions("other")[1] == 0
    assert store.list_interventions("org")[0][0] in (iv, other)


def test_audit_records_every_change_with_actor(kill_store: KillStore) -> None:
    store = kill_store
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


def test_checkpoints_are_stored_per_org_and_replaced(kill_store: KillStore) -> None:
    store = kill_store
    assert store.load_checkpoint("org", "run-1") is None
    store.save_checkpoint("org", "run-1", '{"sent":10}')
    store.save_checkpoint("org", "run-1", '{"sent":20}')
    store.save_checkpoint("other", "run-1", '{"sent":1}')
    assert store.load_checkpoint("org", "run-1") == '{"sent":20}'
    assert store.load_checkpoint("other", "run-1") == '{"sent":1}'


# MemoryStore only: its bounded change log, and listeners called under its lock (the SQL store's
# listeners hear commits through the change feed: tests/server/test_coherence.py).


def test_a_time_limited_kill_is_revived_once_by_expiry(kill_store: KillStore) -> None:
    store = kill_store
    until = utcnow() + timedelta(hours=1)
    killed = store.kill("org", "agent", "a", reason="look", actor="u", expires_at=until)
    store.kill("org", "agent", "b", reason=None, actor="u")  # no expiry: stays
    assert killed.kill_switch.expires_at == until
    assert store.get_active("org", "agent", "a") == killed.kill_switch
    assert store.expire_due(until - timedelta(seconds=1)) == []
    expired = store.expire_due(until)
    assert [(c.kind, c.version, c.kill_switch.id) for c in expired] == [
        ("revive", 3, killed.kill_switch.id)
    ]
    revived = expired[0].kill_switch
    assert revived.revived_by == "expiry" and not revived.is_active
    assert store.expire_due(until + timedelta(hours=2)) == []  # once
    assert store.get_active("org", "agent", "a") is None
    assert [ks.target_id for ks in store.snapshot("org").active] == ["b"]
    assert [c.kind for c in store.changes_since("org", 0) or []] == ["kill", "kill", "revive"]
    entry = store.list_audit("org", action="revive")[0][0]
    assert (entry.actor, entry.target_id, entry.version) == ("expiry", "a", 3)
    assert entry.detail == f"expired at {until.isoformat()}"


def test_an_expiry_after_a_revive_and_a_new_kill_leaves_the_new_kill(
    kill_store: KillStore,
) -> None:
    store = kill_store
    soon = utcnow() + timedelta(minutes=1)
    store.kill("org", "run", "r", reason=None, actor="u", expires_at=soon)
    store.revive("org", "run", "r", actor="v")
    again = store.kill("org", "run", "r", reason=None, actor="u")
    assert store.expire_due(soon + timedelta(minutes=1)) == []
    assert store.get_active("org", "run", "r") == again.kill_switch


def test_a_kill_without_expiry_has_the_seed_record(kill_store: KillStore) -> None:
    ks = kill_store.kill("org", "agent", "a", reason=None, actor="u").kill_switch
    assert ks.expires_at is None and "expires_at" not in ks.model_dump()


def test_memory_store_revives_a_time_limited_kill_on_its_own() -> None:
    store = MemoryStore()
    store.kill(
        "org",
        "agent",
        "a",
        reason=None,
        actor="u",
        expires_at=utcnow() + timedelta(milliseconds=200),
    )
    seen = threading.Event()
    store.subscribe(lambda org, change: change.kind == "revive" and seen.set())
    assert seen.wait(5)
    assert store.get_active("org", "agent", "a") is None
    assert store.list_audit("org", action="revive")[0][0].actor == "expiry"


def test_an_organization_stop_names_its_own_organization(kill_store: KillStore) -> None:
    store = kill_store
    with pytest.raises(InvalidInputError) as caught:
        store.kill("org", "organization", "other-org", reason=None, actor="u")
    assert caught.value.field == "target_id" and "'org'" in caught.value.message
    stop = store.kill("org", "organization", "org", reason="incident", actor="u")
    assert stop.kill_switch.target_type == "organization"
    assert store.get_active("org", "organization", "org") == stop.kill_switch
    with pytest.raises(AlreadyKilledError):
        store.kill("org", "organization", "org", reason=None, actor="v")
    assert store.snapshot("other").active == []
    resumed = store.revive("org", "organization", "org", actor="v")
    assert resumed.kill_switch.revived_by == "v" and store.snapshot("org").active == []


def test_a_selector_is_one_target_however_it_is_written(kill_store: KillStore) -> None:
    store = kill_store
    killed = store.kill("org", "selector", "team=growth, env=prod", reason=None, actor="u")
    assert killed.kill_switch.target_id == "env=prod,team=growth"
    with pytest.raises(AlreadyKilledError) as caught:
        store.kill("org", "selector", "env=prod,team=growth", reason=None, actor="v")
    assert caught.value.kill_switch == killed.kill_switch
    assert store.get_active("org", "selector", "team=growth,env=prod") == killed.kill_switch
    revived = store.revive("org", "selector", "team=growth,env==prod", actor="v")
    assert revived.kill_switch.id == killed.kill_switch.id
    with pytest.raises(InvalidInputError):
        store.kill("org", "selector", "env!=prod", reason=None, actor="u")


def test_a_revive_reason_is_the_audit_entrys_detail(kill_store: KillStore) -> None:
    store = kill_store
    store.kill("org", "agent", "a", reason="loops", actor="u")
    with pytest.raises(InvalidInputError):
        store.revive("org", "agent", "a", actor="v", reason="x" * 2001)
    store.revive("org", "agent", "a", actor="v", reason="fixed the loop")
    (entry,) = store.list_audit("org", action="revive")[0]
    assert (entry.actor, entry.detail) == ("v", "fixed the loop")


def test_memory_changes_since_returns_none_when_the_log_is_trimmed() -> None:
    store = MemoryStore(change_log_size=2)
    for i in range(4):
        store.kill("org", "agent", f"a{i}", reason=None, actor="u")
    assert store.changes_since("org", 0) is None
    assert [c.version for c in store.changes_since("org", 2) or []] == [3, 4]


def test_memory_listeners_see_changes_in_version_order_across_threads() -> None:
    store = MemoryStore()
    seen: list[int] = []
    unsubscribe = store.subscribe(lambda org, change: seen.append(change.version))

    def churn(i: int) -> None:
        for j in range(50):
            store.kill("org", "agent", f"{i}-{j}", reason=None, actor="u")

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(1, 201))
    unsubscribe()
    store.kill("org", "agent", "late", reason=None, actor="u")
    assert len(seen) == 200
