"""Server rules: an agent's heartbeat totals, across all its instances, against its limits.

``KillSwitchServer(rules=[BudgetRule(...)])`` evaluates each rule after every heartbeat, on the
agent's totals summed from heartbeats in 10-second slices; a rule in ``observe`` mode records
what it would have done instead of killing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from ..errors import AlreadyKilledError, InvalidInputError
from ..index import KillIndex
from ..records import Intervention, InterventionType
from ..rules import BudgetRule, ErrorRateRule, LoopRule, RateRule, Rule
from ..telemetry import Telemetry
from ..wording import plural
from .store.audit import RULE_OBSERVED
from .store.sqlstore import SQLStore
from .store.usage import USAGE_SLICE, Usage

logger = logging.getLogger("agentguard.server")


def validate_rules(rules: Sequence[Rule] | None) -> list[Rule]:
    """The rules a server can evaluate from heartbeat totals, or an error naming the misfit."""
    checked = list(rules or ())
    for rule in checked:
        if not isinstance(rule, (BudgetRule, RateRule, ErrorRateRule)):
            what = (
                "LoopRule needs each call's arguments"
                if isinstance(rule, LoopRule)
                else (f"{type(rule).__name__} is not a rule a server can evaluate")
            )
            raise InvalidInputError(
                "rules", f"{what}; declare it on the Guard (server rules: budget, rate, error rate)"
            )
        if rule.per != "agent":
            raise InvalidInputError(
                "rules",
                f"server rule {rule.name!r}: heartbeats are totalled per agent; per='agent'",
            )
        if isinstance(rule, RateRule) and rule.tool is not None:
            raise InvalidInputError(
                "rules",
                f"server rule {rule.name!r}: heartbeats carry totals, not per-tool counts; "
                "declare a per-tool rate rule on the Guard",
            )
    names = [r.name for r in checked]
    if len(set(names)) != len(names):
        raise InvalidInputError("rules", f"rule names must be unique; got {names}")
    return checked


def _exceeds(rule: Rule, agent_id: str, used: Usage) -> str | None:
    """The trip reason if the agent's totals exceed the rule."""
    where = f"across all instances of agent {agent_id!r}"
    if isinstance(rule, BudgetRule):
        if used.cost_usd > rule.limit_usd:
            return (
                f"spent ${used.cost_usd:,.2f} in {rule.window:g} s {where}; "
                f"limit ${rule.limit_usd:,.2f}"
            )
    elif isinstance(rule, RateRule):
        if used.executed > rule.limit:
            return (
                f"{plural(used.executed, 'guarded call')} in {rule.window:g} s {where}; "
                f"limit {rule.limit:,}"
            )
    elif isinstance(rule, ErrorRateRule):
        if used.executed >= rule.min_calls and used.failed / used.executed > rule.max_rate:
            return (
                f"{used.failed:,} of {plural(used.executed, 'call')} failed "
                f"in {rule.window:g} s {where} "
                f"({used.failed / used.executed:.0%}); limit {rule.max_rate:.0%}"
            )
    return None


def _window(rule: Rule) -> float:
    window: float = rule.window  # type: ignore[attr-defined]  # every server rule has one
    return float(window)


class ServerRules:
    """The server rules of one server's store, evaluated after each heartbeat."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        store: SQLStore,
        index: Callable[[str], KillIndex],
        telemetry: Telemetry,
    ) -> None:
        self.rules = validate_rules(rules)
        self.store = store
        self._index = index
        self.telemetry = telemetry

    def evaluate(self, organization_id: str, agent_id: str, now: datetime, tripper: str) -> None:
        """Evaluate every rule on the agent's totals; ``tripper`` is named in what a rule does."""
        for rule in self.rules:
            try:
                self._evaluate(rule, organization_id, agent_id, now, tripper)
            except Exception:  # a broken rule must not fail the instance's heartbeat
                logger.exception("agentguard: server rule %s failed", rule.name)

    def _evaluate(self, rule: Rule, org: str, agent_id: str, now: datetime, tripper: str) -> None:
        since = now - timedelta(seconds=_window(rule))
        used = self.store.usage_since(org, [agent_id], since).get(agent_id, Usage())
        reason = _exceeds(rule, agent_id, used)
        if reason is None:
            return
        actor = f"rule:{rule.name}"
        last = self.store.last_rule_action(org, actor, "agent", agent_id)
        if last is not None and last >= since - timedelta(seconds=USAGE_SLICE):
            # Count afresh after the rule's last kill or observation: slices after its own.
            after = last + timedelta(seconds=USAGE_SLICE)
            used = self.store.usage_since(org, [agent_id], after).get(agent_id, Usage())
            reason = _exceeds(rule, agent_id, used)
            if reason is None:
                return
        if rule.mode == "observe":
            logger.warning(
                "agentguard: rule %s would kill agent %r: %s", rule.name, agent_id, reason
            )
            self.store.add_interventions(
                org,
                [
                    Intervention(
                        type=InterventionType.OBSERVED,
                        action=actor,
                        target_type="agent",
                        target_id=agent_id,
                        killed_by=actor,
                        reason=reason,
                        agent_id=agent_id,
                        occurred_at=now,
                    )
                ],
                reporter="the server",
            )
            # What the rule itself reads back: clients cannot write audit entries.
            self.store.audit(
                org,
                action=RULE_OBSERVED,
                actor=actor,
                target_type="agent",
                target_id=agent_id,
                detail=f"{reason}; tripped by {tripper}",
                created_at=now,
            )
            return
        if self._index(org).agent.get(agent_id) is not None:
            return  # already killed (by this rule or anyone): nothing to add
        try:
            change = self.store.kill(
                org,
                "agent",
                agent_id,
                reason=reason,
                actor=actor,
                audit_note=f"tripped by {tripper}",
                rule=rule.name,
            )
        except AlreadyKilledError:
            return
        logger.warning("agentguard: rule %s killed agent %r: %s", rule.name, agent_id, reason)
        self.telemetry.record_change(change, actor=actor)
