"""KillIndex applies only newer versions, so nothing late or repeated undoes a kill."""

from __future__ import annotations

import pytest

from agentguard import CallCounts, Guard, MemoryStore, PolicyViolationError, Scope
from agentguard.index import KillIndex


def test_older_or_repeated_changes_are_ignored() -> None:
    store = MemoryStore()
    kill = store.kill("org", "agent", "a", reason=None, actor="u")
    revive = store.revive("org", "agent", "a", actor="u")
    kill2 = store.kill("org", "agent", "a", reason=None, actor="u")
    index = KillIndex()
    assert index.apply(kill) and index.apply(revive) and index.apply(kill2)
    assert not index.apply(revive)  # a late revive must not undo the newer kill
    assert index.get("agent", "a") == kill2.kill_switch and index.version == 3


def test_revive_of_an_older_record_leaves_the_newer_kill() -> None:
    store = MemoryStore()
    k1 = store.kill("org", "agent", "a", reason=None, actor="u")
    r1 = store.revive("org", "agent", "a", actor="u")
    k2 = store.kill("org", "agent", "a", reason=None, actor="u")
    index = KillIndex()
    index.apply(k1)
    index.replace(store.snapshot("org"))  # jumps to version 3 with k2 active
    assert not index.apply(r1)
    assert index.get("agent", "a") == k2.kill_switch


def test_snapshot_older_than_index_is_ignored() -> None:
    store = MemoryStore()
    store.kill("org", "agent", "a", reason=None, actor="u")
    old = store.snapshot("org")
    store.kill("org", "agent", "b", reason=None, actor="u")
    index = KillIndex()
    index.replace(store.snapshot("org"))
    assert not index.replace(old)
    assert {ks.target_id for ks in index.active()} == {"a", "b"}


def test_a_guard_sees_every_write_even_a_snapshot_of_the_same_version() -> None:
    # e.g. a server restarted with empty memory that reached the same version number again
    elsewhere = MemoryStore()
    elsewhere.kill("org", "agent", "x", reason=None, actor="u")
    elsewhere.kill("org", "agent", "a", reason=None, actor="u")
    guard = Guard()
    guard.kill("agent", "other-1")
    guard.kill("agent", "other-2")
    assert guard.index.version == elsewhere.snapshot("org").version
    guard.admit("send", Scope("a"))  # allowed: remembered as clear until the index changes
    assert guard.index.replace(elsewhere.snapshot("org"))
    with pytest.raises(PolicyViolationError):
        guard.admit("send", Scope("a"))
    assert guard.counts(action="send") == CallCounts(executed=1, refused=1)
