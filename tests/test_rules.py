"""Auto-trip rules, on a fake clock: each trips (kills) and observes."""

from __future__ import annotations

import pytest

from agentguard import (
    BudgetRule,
    ErrorRateRule,
    Guard,
    InterventionType,
    InvalidInputError,
    LoopRule,
    MemoryStore,
    PolicyViolationError,
    RateRule,
    scope,
)
from support import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_rule_trips_kills_and_names_the_numbers() -> None:
    clock = Clock()
    store = MemoryStore()
    guard = Guard(
        store, clock=clock, rules=[RateRule("email-rate", tool="send_email", limit=5, window=60)]
    )
    replica = Guard(store)  # another instance of the same agent

    @guard.guarded_action(name="send_email")
    def send(i: int) -> int:
        return i

    @replica.guarded_action(name="send_email")
    def send_elsewhere(i: int) -> int:
        return i

    with scope(agent_id="mailer"):
        for i in range(5):
            send(i)
            clock.now += 1
        with pytest.raises(PolicyViolationError) as info:
            send(5)
        assert info.value.killed_by == "rule:email-rate"
        assert info.value.reason == "send_email called 6 times in 60 s; limit 5"
        eventually(lambda: guard.check("agent", "mailer").is_killed)  # lands from a thread
        with pytest.raises(PolicyViolationError):
            send_elsewhere(1)  # the kill went through the normal path: every instance stops
    ks = guard.check("agent", "mailer")
    assert ks.killed_by == "rule:email-rate" and "limit 5" in (ks.reason or "")
    assert guard.counts("agent", "mailer").executed == 5
    guard.revive("agent", "mailer", actor="usr_ops")
    with scope(agent_id="mailer"):
        assert send(9) == 9  # counting starts afresh after the revive


def test_rate_window_slides() -> None:
    clock = Clock()
    guard = Guard(clock=clock, rules=[RateRule("r", limit=3, window=10)])

    @guard.guarded_action
    def act() -> None: ...

    with scope(agent_id="a"):
        for _ in range(30):  # 1 call every 4 s never exceeds 3 per 10 s
            act()
            clock.now += 4
    assert guard.counts("agent", "a").executed == 30


def test_rules_are_per_agent_and_skip_unscoped_calls() -> None:
    clock = Clock()
    guard = Guard(clock=clock, rules=[RateRule("r", limit=2, window=60)])

    @guard.guarded_action
    def act() -> None: ...

    for agent in ("a", "b"):
        with scope(agent_id=agent):
            act()
            act()
    for _ in range(10):
        act()  # no agent id: the per-agent rule does not apply
    # Two calls each is at the limit, not over it; ten unscoped calls count for no agent.
    assert guard.active() == []
    assert guard.counts("agent", "a").executed == guard.counts("agent", "b").executed == 2
    assert guard.counts().executed == 14 and guard.counts().refused == 0
    with scope(agent_id="a"), pytest.raises(PolicyViolationError) as info:
        act()  # a's third call in the window: a alone is over the limit
    assert (info.value.target_type, info.value.target_id) == ("agent", "a")


def test_observe_mode_records_without_blocking() -> None:
    clock = Clock()
    guard = Guard(clock=clock, rules=[RateRule("r", mode="observe", limit=2, window=60)])

    @guard.guarded_action
    def act() -> None: ...

    with scope(agent_id="a"):
        for _ in range(3):
            act()
    (iv,) = guard.interventions()
    assert iv.type is InterventionType.OBSERVED and iv.action == "rule:r"
    assert (iv.target_type, iv.target_id, iv.agent_id) == ("agent", "a", "a")
    assert "called 3 times in 60 s; limit 2" in (iv.reason or "")
    assert not guard.check("agent", "a").is_killed
    assert guard.counts("agent", "a").executed == 3


def test_budget_rule_trips_on_reported_cost() -> None:
    clock = Clock()
    guard = Guard(clock=clock, rules=[BudgetRule("budget", limit_usd=3.0, window=3600, per="run")])

    @guard.guarded_action
    def act() -> None: ...

    with scope(agent_id="a", run_id="r1"):
        act()
        guard.report_metric(success=True, cost_usd=2.0)
        act()
        guard.report_metric(success=True, cost_usd=1.5)
        eventually(lambda: guard.check("run", "r1").is_killed)  # lands from a thread
        with pytest.raises(PolicyViolationError) as info:
            act()
    assert info.value.reason == "spent $3.50 in 3600 s; limit $3.00"
    assert guard.cost("run", "r1") == 3.5 and guard.cost("agent", "a") == 3.5


def test_loop_rule_trips_on_identical_repeats() -> None:
    guard = Guard(rules=[LoopRule("loop", repeats=3)])

    @guard.guarded_action
    def search(q: str, page: int = 1) -> str:
        return q

    with scope(agent_id="a"):
        search("x", page=1)
        search("x", page=2)  # different arguments reset the run
        search("x", page=2)
        with pytest.raises(PolicyViolationError, match="3 times in a row with the same arguments"):
            search("x", page=2)


def test_error_rate_rule_trips_on_failures() -> None:
    clock = Clock()
    guard = Guard(
        clock=clock, rules=[ErrorRateRule("errors", max_rate=0.5, min_calls=4, window=60)]
    )

    @guard.guarded_action
    def flaky(fail: bool) -> None:
        if fail:
            raise RuntimeError("upstream 500")

    with scope(agent_id="a"):
        flaky(False)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                flaky(True)
        eventually(lambda: guard.check("agent", "a").is_killed)  # lands from a thread
    ks = guard.check("agent", "a")
    assert (
        ks.killed_by == "rule:errors"
        and ks.reason == "3 of 4 calls failed in 60 s (75%); limit 50%"
    )


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: RateRule("r", limit=0), "limit"),
        (lambda: RateRule("r", window=-1), "window"),
        (lambda: RateRule("", limit=1), "name"),
        (lambda: RateRule("r", mode="maybe"), "mode"),  # type: ignore[arg-type]
        (lambda: RateRule("r", per="tool"), "per"),  # type: ignore[arg-type]
        (lambda: BudgetRule("b", limit_usd=0), "limit_usd"),
        (lambda: ErrorRateRule("e", max_rate=1.5), "max_rate"),
        (lambda: Guard(rules=[RateRule("same"), RateRule("same")]), "rules"),
    ],
)
def test_rule_validation_names_the_field(make: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field


def test_report_metric_validation() -> None:
    with pytest.raises(InvalidInputError, match="cost_usd"):
        Guard().report_metric(cost_usd=-1)


def test_parse_rule_builds_each_kind_with_typed_fields() -> None:
    from agentguard.rules import parse_rule

    rate = parse_rule("rate:name=email-rate, limit=500, window=60, tool=send_email")
    assert rate == RateRule(name="email-rate", limit=500, window=60.0, tool="send_email")
    assert isinstance(rate.limit, int) and isinstance(rate.window, float)
    assert parse_rule("budget") == BudgetRule(name="budget")
    assert parse_rule("error-rate:max_rate=0.2,mode=observe") == ErrorRateRule(
        name="error-rate", max_rate=0.2, mode="observe"
    )
    assert parse_rule("loop:repeats=3,tool=search").repeats == 3


def test_rule_reasons_count_one_call_in_the_singular() -> None:
    guard = Guard(clock=Clock(), rules=[ErrorRateRule("errors", max_rate=0.5, min_calls=1)])

    @guard.guarded_action
    def flaky() -> None:
        raise RuntimeError("upstream 500")

    with scope(agent_id="a"), pytest.raises(RuntimeError):
        flaky()
    eventually(lambda: guard.check("agent", "a").is_killed)  # lands from a thread
    assert guard.check("agent", "a").reason == "1 of 1 call failed in 60 s (100%); limit 50%"


def test_reported_outcomes_count_and_trip_the_error_rate_rule() -> None:
    clock = Clock()
    guard = Guard(
        clock=clock, rules=[ErrorRateRule("errors", max_rate=0.5, min_calls=4, window=60)]
    )
    with scope(agent_id="a"):
        guard.report_metric(success=True)
        for _ in range(3):
            guard.report_metric(success=False)  # e.g. LLM calls no guarded call counted
        eventually(lambda: guard.check("agent", "a").is_killed)  # lands from a thread
    counts = guard.counts("agent", "a")
    assert (counts.executed, counts.failed) == (4, 3)  # what heartbeats report to the fleet
    assert guard.check("agent", "a").reason == "3 of 4 calls failed in 60 s (75%); limit 50%"
    guard.report_metric(cost_usd=1.0, agent_id="b")  # a cost alone is no outcome
    assert guard.counts("agent", "b").executed == 0
