"""fail_mode and max_staleness, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import logging

import pytest

from agentguard import AgentGuardWarning, Guard, MemoryStore, PolicyViolationError, scope
from agentguard.sources import LocalSource


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SyncedSource(LocalSource):
    """A store-backed source whose view must be re-confirmed, like a remote one."""

    def __init__(self, clock: FakeClock, *, synced: bool = True) -> None:
        super().__init__(MemoryStore(), "org")
        self.index.fresh_until = float("-inf")
        self.index.synced_at = None
        self.clock = clock
        self.synced = synced

    def sync(self) -> None:
        self.index.mark_synced(self.clock())


def make(
    fail_mode: str = "closed", *, synced: bool = True
) -> tuple[Guard, SyncedSource, FakeClock]:
    clock = FakeClock()
    source = SyncedSource(clock)
    guard = Guard(source, fail_mode=fail_mode, max_staleness=10, clock=clock)  # type: ignore[arg-type]
    if synced:
        source.sync()
    return guard, source, clock


def test_fresh_view_allows_and_stale_view_refuses_when_closed() -> None:
    guard, source, clock = make()

    @guard.guarded_action(agent_id="bot")
    def act() -> int:
        return 1

    clock.now += 9.9
    assert act() == 1
    clock.now += 0.2
    with pytest.raises(
        PolicyViolationError, match=r"stale: last synced with the server 10\.1 s ago"
    ) as info:
        act()
    assert info.value.kill_switch_id is None and info.value.killed_by is None
    assert (info.value.target_type, info.value.target_id) == ("agent", "bot")
    (iv,) = guard.interventions()
    assert iv.kill_switch_id is None and "stale" in (iv.reason or "")
    source.sync()
    assert act() == 1
    # Refused for want of kill state: counted apart from refusals by a kill.
    assert guard.counts().model_dump() == {
        "executed": 2,
        "refused": 0,
        "failed": 0,
        "unavailable": 1,
        "cancelled": 0,
    }


def test_stale_view_allows_loudly_when_open(caplog: pytest.LogCaptureFixture) -> None:
    guard, _, clock = make("open")

    @guard.guarded_action(agent_id="bot")
    def act() -> int:
        return 1

    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="agentguard"):
        with pytest.warns(AgentGuardWarning, match="fail_mode='open'"):
            assert act() == 1
        assert act() == 1  # logged each time, warned once
    assert sum("allowing 'act'" in r.message for r in caplog.records) == 2
    assert guard.interventions() == []


def test_kills_still_refuse_in_open_mode_while_stale() -> None:
    guard, source, clock = make("open")
    source.store.kill("org", "agent", "bot", reason="r", actor="usr")

    @guard.guarded_action(agent_id="bot")
    def act() -> int:
        return 1

    clock.now += 60
    with pytest.raises(PolicyViolationError, match="killed by usr"):
        act()


def test_never_synced_refuses_when_closed() -> None:
    guard, _, _ = make(synced=False)

    @guard.guarded_action(run_id="r1")
    def act() -> int:
        return 1

    with pytest.raises(PolicyViolationError, match="never been synced") as info:
        act()
    assert (info.value.target_type, info.value.target_id) == ("run", "r1")


def test_stale_refusal_names_the_tool_without_scope() -> None:
    guard, _, clock = make()

    @guard.guarded_action
    def lonely() -> None: ...

    clock.now += 11
    with scope():
        with pytest.raises(PolicyViolationError) as info:
            lonely()
    assert (info.value.target_type, info.value.target_id) == ("tool", "lonely")


def test_source_age_reports_seconds_since_sync() -> None:
    _, source, clock = make()
    clock.now += 3.5
    assert source.age(clock()) == pytest.approx(3.5)
    assert LocalSource(MemoryStore(), "o").age(clock()) == 0.0
