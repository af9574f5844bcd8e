"""The public extension API of Guard: what actions, heartbeats, rules and integrations use."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard import (
    Guard,
    InterventionType,
    InvalidInputError,
    PolicyViolationError,
    RateRule,
    Scope,
    current_scope,
    enter_scope,
    exit_scope,
)
from agentguard.rules import Trip

ROOT = Path(__file__).resolve().parents[1]


def test_admit_applies_defaults_counts_and_refuses() -> None:
    guard = Guard(agent_id="bot")
    key = guard.admit("send", Scope(run_id="r1"))
    assert key == ("send", Scope("bot", "r1", None))
    guard.count_failure(key)
    assert guard.counts("agent", "bot") == guard.counts(action="send")
    counts = guard.counts("run", "r1")
    assert (counts.executed, counts.failed, counts.refused) == (1, 1, 0)

    guard.kill("run", "r1", reason="looping")
    with pytest.raises(PolicyViolationError) as refused:
        guard.admit("send", Scope(run_id="r1"), ("x",), {"to": "y"})
    assert (refused.value.target_type, refused.value.target_id) == ("run", "r1")
    assert guard.counts("run", "r1").refused == 1
    guard.admit("send", Scope(run_id="r2"))  # other runs of the agent still pass


async def test_admit_async_admits_and_refuses_like_admit() -> None:
    guard = Guard()
    assert guard.strict is False  # checked inline: no worker thread
    assert await guard.admit_async("pay", Scope(agent_id="a")) == ("pay", Scope("a"))
    guard.kill("tool", "pay")
    with pytest.raises(PolicyViolationError):
        await guard.admit_async("pay", Scope(agent_id="a"))
    counts = guard.counts(action="pay")
    assert (counts.executed, counts.refused) == (1, 1)


def test_index_blocking_is_the_most_specific_kill_of_a_scope() -> None:
    guard = Guard()
    index = guard.index
    assert index.blocking(Scope("a", "r", "m")) is None
    guard.kill("tool", "send")
    guard.kill("agent", "a")
    assert index.blocking(Scope("a", "r", "m")).target_type == "agent"  # type: ignore[union-attr]
    guard.kill("run", "r")
    guard.kill("mission", "m")
    assert index.blocking(Scope("a", "r", "m")).target_type == "mission"  # type: ignore[union-attr]
    assert index.blocking(Scope("a", "r")).target_type == "run"  # type: ignore[union-attr]
    assert index.blocking(Scope()) is None  # a tool kill blocks calls, not scopes
    guard.revive("agent", "a")
    assert index.blocking(Scope("a")) is None
    assert index.version == guard.version


def test_defaults_and_total_cost() -> None:
    assert Guard().defaults == Scope()
    guard = Guard(agent_id="bot", mission_id="q4")
    assert guard.defaults == Scope("bot", None, "q4")
    guard.report_metric(cost_usd=1.5, run_id="r1")
    guard.report_metric(cost_usd=2.0, agent_id="other")
    assert guard.total_cost() == 3.5
    assert guard.cost("agent", "bot") == 1.5


def test_record_observation_records_and_blocks_nothing() -> None:
    guard = Guard()
    rule = RateRule("fast", mode="observe", limit=1, window=1)
    guard.record_observation(Trip(rule, "agent", "a", "called 2 times in 1 s; limit 1"))
    (iv,) = guard.interventions()
    assert iv.type is InterventionType.OBSERVED and iv.action == "rule:fast"
    assert (iv.target_type, iv.target_id, iv.agent_id) == ("agent", "a", "a")
    assert not guard.check("agent", "a").is_killed
    guard.admit("act", Scope("a"))


def test_enter_and_exit_scope_nest_like_scope() -> None:
    outer = enter_scope(agent_id="a", mission_id="m")
    try:
        assert outer.scope == current_scope() == Scope("a", None, "m")
        inner = enter_scope(run_id="r")
        assert current_scope() == Scope("a", "r", "m")
        exit_scope(inner)
        assert current_scope() == Scope("a", None, "m")
        with pytest.raises(InvalidInputError) as bad:
            enter_scope(run_id=" ")
        assert bad.value.field == "run_id"
        assert current_scope() == Scope("a", None, "m")  # a refused entry changes nothing
    finally:
        exit_scope(outer)
    assert current_scope() == Scope()


def test_a_refusal_under_enter_scope_is_what_wait_until_revived_waits_on() -> None:
    guard = Guard()
    guard.kill("agent", "a")
    token = enter_scope(agent_id="a")
    try:
        with pytest.raises(PolicyViolationError):
            guard.admit("send", current_scope())
        assert guard.wait_until_revived(timeout=0) is False
        guard.revive("agent", "a")
        assert guard.wait_until_revived(timeout=5) is True
    finally:
        exit_scope(token)


def test_fast_check_route_path_matches_starlettes() -> None:
    from starlette._utils import get_route_path

    from agentguard.server.fastcheck import _route_path

    cases = [
        ("/api/v1/kill-switch/check", ""),
        ("/guard/api/v1/kill-switch/check", "/guard"),
        ("/guard", "/guard"),
        ("/guardian/api/v1/kill-switch/check", "/guard"),
        ("/other/api/v1/kill-switch/check", "/guard"),
        ("/guard/", "/guard"),
    ]
    for path, root in cases:
        scope = {"type": "http", "path": path, "root_path": root}
        assert _route_path(scope) == get_route_path(scope), (path, root)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_no_module_touches_another_modules_private_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "SLF001", "--no-cache", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"SLF"' in (ROOT / "pyproject.toml").read_text()  # and `make lint` enforces it


def test_add_cost_adds_under_a_call_s_scope_for_budget_rules() -> None:
    from agentguard import BudgetRule

    guard = Guard(agent_id="bot", rules=[BudgetRule("spend", limit_usd=1.0)])
    key = guard.admit("llm", Scope(run_id="r1"))
    guard.add_cost(key[1], 0.75)
    assert guard.cost("agent", "bot") == guard.cost("run", "r1") == 0.75
    with pytest.raises(InvalidInputError, match="cost_usd"):
        guard.add_cost(key[1], -1.0)
    guard.add_cost(key[1], 0.5)  # over $1: the rule trips and the next call is refused
    with pytest.raises(PolicyViolationError, match="rule:spend"):
        guard.admit("llm", Scope(run_id="r1"))
    guard.close()
