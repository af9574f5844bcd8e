"""Guard's operator verbs, validation, interventions and exact call counts."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from agentguard import (
    AlreadyKilledError,
    Guard,
    InterventionType,
    InvalidInputError,
    MemoryStore,
    NotKilledError,
    PolicyViolationError,
    scope,
)
from support import eventually


def test_kill_check_revive_seed_semantics() -> None:
    guard = Guard()
    status = guard.check("agent", "rogue-bot")
    assert not status.is_killed and status.reason is None and status.killed_at is None
    ks = guard.kill("agent", "rogue-bot", reason="Drained $3k in 4 minutes", actor="usr_abc")
    assert ks.is_active and ks.killed_by == "usr_abc" and ks.organization_id == "local"
    assert ks.revived_by is None and ks.revived_at is None
    status = guard.check("agent", "rogue-bot")
    assert status.is_killed and status.reason == "Drained $3k in 4 minutes"
    assert status.killed_by == "usr_abc" and status.killed_at == ks.killed_at
    with pytest.raises(AlreadyKilledError, match="already killed by usr_abc") as info:
        guard.kill("agent", "rogue-bot", actor="usr_other")
    assert info.value.kill_switch.id == ks.id
    revived = guard.revive("agent", "rogue-bot", actor="usr_def")
    assert revived.id == ks.id and not revived.is_active and revived.revived_by == "usr_def"
    assert revived.revived_at is not None and revived.revived_at >= ks.killed_at
    assert not guard.check("agent", "rogue-bot").is_killed
    with pytest.raises(NotKilledError, match="'rogue-bot' is not killed"):
        guard.revive("agent", "rogue-bot")
    # killed again after a revive: a new record, history kept
    again = guard.kill("agent", "rogue-bot")
    assert again.id != ks.id and again.killed_by == "local"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("robot", "x"), {}, "target_type"),
        (("agent", ""), {}, "target_id"),
        (("agent", "   "), {}, "target_id"),
        (("agent", "x" * 257), {}, "target_id"),
        (("agent", 5), {}, "target_id"),
        (("agent", "x"), {"reason": "r" * 2001}, "reason"),
        (("agent", "x"), {"reason": 12}, "reason"),
    ],
)
def test_kill_validation_names_the_field(args: tuple, kwargs: dict, field: str) -> None:
    guard = Guard()
    with pytest.raises(InvalidInputError) as info:
        guard.kill(*args, **kwargs)
    assert info.value.field == field and field in str(info.value)
    assert guard.active() == [] and guard.version == 0  # nothing half-written


def test_reason_of_exactly_2000_characters_is_accepted() -> None:
    guard = Guard()
    assert guard.kill("mission", "m", reason="r" * 2000).reason == "r" * 2000


def test_validation_on_revive_and_check() -> None:
    guard = Guard()
    with pytest.raises(InvalidInputError, match="target_type"):
        guard.revive("nope", "x")
    with pytest.raises(InvalidInputError, match="target_id"):
        guard.check("agent", "")


def test_constructor_validation() -> None:
    with pytest.raises(InvalidInputError, match="fail_mode"):
        Guard(fail_mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_staleness"):
        Guard(max_staleness=0)
    with pytest.raises(InvalidInputError, match="source"):
        Guard(42)


def test_versions_increase_with_every_change() -> None:
    guard = Guard()
    versions = [guard.version]
    guard.kill("agent", "a")
    versions.append(guard.version)
    guard.kill("tool", "t")
    versions.append(guard.version)
    guard.revive("agent", "a")
    versions.append(guard.version)
    assert versions == [0, 1, 2, 3]


def test_active_lists_newest_first() -> None:
    guard = Guard()
    for i in range(3):
        guard.kill("agent", f"a{i}")
    assert [ks.target_id for ks in guard.active()] == ["a2", "a1", "a0"]


def test_guards_sharing_a_store_see_each_others_kills() -> None:
    store = MemoryStore()
    operator = Guard(store, actor="usr_ops")
    worker = Guard(store)
    other_org = Guard(store, organization_id="org_b")

    @worker.guarded_action(agent_id="bot")
    def act() -> int:
        return 1

    @other_org.guarded_action(agent_id="bot")
    def act_b() -> int:
        return 1

    operator.kill("agent", "bot")
    with pytest.raises(PolicyViolationError) as info:
        act()
    assert info.value.killed_by == "usr_ops"
    assert act_b() == 1  # kill state is per organization
    operator.revive("agent", "bot")
    assert act() == 1


def test_hard_block_interventions_are_recorded() -> None:
    guard = Guard(instance_id="inst-1")
    guard.kill("mission", "m1", reason="budget", actor="usr_abc")

    @guard.guarded_action(name="send_email")
    def send() -> None: ...

    with scope(agent_id="a", run_id="r", mission_id="m1"):
        with pytest.raises(PolicyViolationError) as info:
            send()
    (iv,) = guard.interventions()
    assert iv.id == info.value.intervention_id
    assert iv.type is InterventionType.HARD_BLOCK
    assert (iv.action, iv.target_type, iv.target_id) == ("send_email", "mission", "m1")
    assert (iv.agent_id, iv.run_id, iv.mission_id) == ("a", "r", "m1")
    assert iv.killed_by == "usr_abc" and iv.reason == "budget" and iv.instance_id == "inst-1"
    ks = guard.check("mission", "m1")
    assert iv.kill_switch_id == ks.kill_switch_id
    assert guard.interventions(target_id="other") == []
    assert len(guard.interventions(action="send_email", type="HARD_BLOCK")) == 1


def test_exact_counts_under_threads() -> None:
    guard = Guard()
    threads, calls = 4, 5000

    @guard.guarded_action(name="send")
    def send(i: int) -> int:
        return i

    def run(agent: str) -> None:
        with scope(agent_id=agent, run_id="r"):
            for i in range(calls):
                try:
                    send(i)
                except PolicyViolationError:
                    pass

    guard.kill("agent", "w0")
    workers = [threading.Thread(target=run, args=(f"w{i % 2}",)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert guard.counts("agent", "w1").executed == 2 * calls
    assert guard.counts("agent", "w0").model_dump() == {
        "executed": 0,
        "refused": 2 * calls,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 0,
    }
    assert guard.counts("run", "r").executed == 2 * calls
    assert guard.counts("tool", "send").refused == 2 * calls
    assert guard.counts().executed + guard.counts().refused == threads * calls
    assert len(guard.interventions(limit=100_000)) == 2 * calls


def test_guard_defaults_fill_unset_ids() -> None:
    guard = Guard(agent_id="default-agent")

    @guard.guarded_action
    def act() -> int:
        return 1

    guard.kill("agent", "default-agent")
    with pytest.raises(PolicyViolationError):
        act()
    with scope(agent_id="explicit"):
        assert act() == 1


def test_a_misspelt_keyword_is_a_type_error_naming_it() -> None:
    guard = Guard()
    calls = [
        lambda: Guard(agentid="a"),
        lambda: guard.report_metric(agnet_id="a"),
        lambda: guard.guarded_action(runid="r"),
        lambda: guard.enforce("send", mision_id="m"),
        lambda: guard.wait_until_revived(0, agent="a"),
        lambda: scope(agent="a").__enter__(),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            call()


def test_a_time_limited_kill_refuses_until_it_expires() -> None:
    guard = Guard(agent_id="bot")

    @guard.guarded_action
    def send() -> str:
        return "sent"

    ks = guard.kill("agent", "bot", reason="a look", duration=0.3)
    assert ks.expires_at is not None and guard.check("agent", "bot").is_killed
    with pytest.raises(PolicyViolationError):
        send()

    def allowed() -> bool:
        try:
            return send() == "sent"
        except PolicyViolationError:
            return False

    eventually(allowed, timeout=5)
    (entry,) = guard.source.store.list_audit(guard.organization_id, action="revive")[0]
    assert entry.actor == "expiry"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"duration": "1h", "expires_at": datetime(2099, 1, 1, tzinfo=timezone.utc)}, "duration"),
        ({"duration": "an hour"}, "duration"),
        ({"duration": timedelta(0)}, "duration"),
        ({"expires_at": datetime(2001, 1, 1, tzinfo=timezone.utc)}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
    ],
)
def test_bad_expiries_name_the_field(kwargs: dict[str, object], field: str) -> None:
    guard = Guard()
    with pytest.raises(InvalidInputError) as caught:
        guard.kill("agent", "bot", **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert guard.active() == []


def test_stop_all_refuses_every_call_of_the_organization_until_resume_all() -> None:
    guard = Guard()

    @guard.guarded_action
    def fetch() -> str:
        return "fetched"

    @guard.guarded_action(agent_id="mailer", run_id="r-1")
    def send() -> str:
        return "sent"

    assert fetch() == "fetched" and send() == "sent"
    stop = guard.stop_all(reason="incident 42")
    assert (stop.target_type, stop.target_id) == ("organization", guard.organization_id)
    assert guard.check("organization", guard.organization_id).is_killed
    for call in (fetch, send):
        with pytest.raises(PolicyViolationError) as refused:
            call()
        assert refused.value.target_type == "organization"
        assert refused.value.reason == "incident 42"
    with scope(agent_id="anyone", mission_id="m"):
        with pytest.raises(PolicyViolationError):
            guard.raise_if_killed()
    assert guard.counts("organization", guard.organization_id).refused == 3  # raise_if_killed too
    with pytest.raises(InvalidInputError) as caught:
        guard.kill("organization", "someone-else")
    assert caught.value.field == "target_id"
    guard.resume_all()
    assert fetch() == "fetched" and send() == "sent"
    (block, *_) = guard.interventions()
    assert (block.target_type, block.target_id) == ("organization", guard.organization_id)
