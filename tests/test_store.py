"""MemoryStore: the KillStore contract the SQL store also meets."""

from __future__ import annotations

import threading

import pytest

from agentguard import AlreadyKilledError, Intervention, KillStore, MemoryStore, NotKilledError


def test_memory_store_is_a_kill_store() -> None:
    assert isinstance(MemoryStore(), KillStore)


def test_concurrent_kills_of_one_target_have_one_winner() -> None:
    store = MemoryStore()
    results: list[str] = []
    barrier = threading.Barrier(24)

    def kill() -> None:
        barrier.wait()
        try:
            store.kill("org", "agent", "bot", reason=None, actor="u")
            results.append("ok")
        except AlreadyKilledError:
            results.append("conflict")

    threads = [threading.Thread(target=kill) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("conflict") == 23
    assert store.snapshot("org").version == 1


def test_versions_changes_and_snapshots() -> None:
    store = MemoryStore()
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
    assert store.get_active("org", "agent", "a") is None
    assert store.get_active("other", "agent", "a") is not None


def test_changes_since_returns_none_when_the_log_is_trimmed() -> None:
    store = MemoryStore(change_log_size=2)
    for i in range(4):
        store.kill("org", "agent", f"a{i}", reason=None, actor="u")
    assert store.changes_since("org", 0) is None
    assert [c.version for c in store.changes_since("org", 2) or []] == [3, 4]


def test_listeners_see_changes_in_version_order_across_threads() -> None:
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


def test_revive_unknown_target_raises_and_writes_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(NotKilledError):
        store.revive("org", "agent", "nobody", actor="u")
    assert store.snapshot("org").version == 0 and store.list_audit("org")[1] == 0


def test_list_active_pages_newest_first() -> None:
    store = MemoryStore()
    for i in range(5):
        store.kill("org", "agent", f"a{i}", reason=None, actor="u")
    page, count = store.list_active("org", skip=1, limit=2)
    assert count == 5 and [ks.target_id for ks in page] == ["a3", "a2"]


def test_interventions_are_idempotent_by_id_and_filterable() -> None:
    store = MemoryStore()
    iv = Intervention(action="send", target_type="agent", target_id="a")
    other = Intervention(action="pay", target_type="run", target_id="r")
    assert store.add_interventions("org", [iv, other]) == 2
    assert store.add_interventions("org", [iv]) == 0
    assert store.list_interventions("org")[1] == 2
    assert [i.id for i in store.list_interventions("org", action="pay")[0]] == [other.id]
    assert store.list_interventions("other")[1] == 0


def test_audit_records_every_change_with_actor() -> None:
    store = MemoryStore()
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
