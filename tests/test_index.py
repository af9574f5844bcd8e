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


def test_a_drill_is_rehearsed_and_changes_nothing() -> None:
    """A drill goes through a kill's write path (its lock, its table) and leaves the index as
    it was: no version, revision or table moves, no watcher is told, no call is refused."""
    store = MemoryStore()
    index = KillIndex()
    index.apply(store.kill("org", "agent", "other", reason=None, actor="u"))
    told: list[object] = []
    index.watch(told.append)
    before = (index.version, index.revision, index.active())
    for target_type in ("agent", "run", "mission", "tool"):
        assert index.rehearse(target_type, "email-campaign")
    assert (index.version, index.revision, index.active()) == before and told == []
    assert index.blocking(Scope(agent_id="email-campaign", run_id="email-campaign")) is None
    # A kill it could not hold is no rehearsal: the guard does not answer it.
    assert not index.rehearse("selector", "env=prod") and not index.rehearse("agent", "")


def test_the_index_keeps_kills_compactly_and_gives_back_the_records() -> None:
    from agentguard.index import Kill

    store = MemoryStore()
    first = store.kill("org", "run", "r-1", reason="looping on retries", actor="usr_ops")
    second = store.kill("org", "run", "r-2", reason="looping on retries", actor="usr_ops")
    index = KillIndex()
    index.replace(store.snapshot("org"))
    one, two = index.run["r-1"], index.run["r-2"]
    assert isinstance(one, Kill) and isinstance(two, Kill)
    assert one[1] is two[1] and one[2] is two[2]  # one reason, one killer: shared
    assert index.get("run", "r-1") == first.kill_switch
    assert index.blocking(Scope(run_id="r-2")) == second.kill_switch
    third = store.kill("org", "agent", "a", reason="looping on retries", actor="usr_ops")
    index.apply(third)
    assert index.get("agent", "a") == third.kill_switch
    assert sorted(ks.target_id for ks in index.active()) == ["a", "r-1", "r-2"]
    assert index.apply(store.revive("org", "run", "r-1", actor="usr_ops"))
    assert index.get("run", "r-1") is None and index.organization_id == "org"


def test_a_kill_whose_id_is_no_uuid_is_kept_as_it_is() -> None:
    from datetime import datetime, timezone

    from agentguard.records import KillSwitch, Snapshot

    odd = KillSwitch(id="ks-bot", target_type="agent", target_id="bot", reason=None,
                     is_active=True, killed_by="usr", organization_id="org",
                     killed_at=datetime(2026, 11, 22, 10, tzinfo=timezone.utc))  # fmt: skip
    naive = odd.model_copy(update={"id": "00000000-0000-4000-8000-000000000000",
                                   "target_id": "bot-2",
                                   "killed_at": datetime(2026, 11, 22, 10)})  # fmt: skip
    index = KillIndex()
    index.replace(Snapshot(organization_id="org", version=1, active=[odd, naive]))
    assert index.agent["bot"] is odd and index.get("agent", "bot") is odd
    assert index.get("agent", "bot-2") is naive
