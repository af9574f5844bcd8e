"""AgentSentinel ledgers: each new entry's usage, counted once, into its instance and agent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, update

from ..auth.binding import AgentNotAllowedError
from .instances import InstanceRow, lock_instance
from .rows import Rows, upsert
from .tables import instances, ledger_entries
from .usage import add_usage

Usage4 = tuple[int, int, int, float]  # executed, refused, failed, cost


@dataclass(frozen=True)
class LedgerItem:
    """One ledger entry as the store counts it: its id, who it is for, and its usage."""

    id: str
    agent_id: str | None
    run_id: str
    mission_id: str | None
    usage: Usage4


@dataclass(frozen=True)
class LedgerGroup:
    """The entries of one agent's run: one fleet instance."""

    instance_id: str
    agent_id: str
    run_id: str
    items: Sequence[LedgerItem]


@dataclass(frozen=True)
class LedgerResult:
    """What a batch changed: entries new to the server, new ones naming no agent, and the
    instances (by agent) whose usage grew."""

    created: int = 0
    unattributed: int = 0
    spent: dict[str, list[str]] = field(default_factory=dict)


class LedgerRows(Rows):
    """Count AgentSentinel ledger entries into instances and usage, once per entry id."""

    def record_ledger(
        self,
        organization_id: str,
        groups: Sequence[LedgerGroup],
        unattributed: Sequence[LedgerItem],
        *,
        now: datetime,
        first_seen: datetime,
        interval: float,
    ) -> LedgerResult:
        """Store a batch in one transaction: all of it, or nothing.

        ``groups`` are the entries of each (agent, run), ``unattributed`` those naming no
        agent (remembered, counted nowhere); entry ids are unique across both. Only entries
        whose id is new add usage; every group's instance is seen at ``now`` (the fleet's
        clock). Raises :class:`AgentNotAllowedError` (writing nothing) if a group's instance
        id already belongs to another agent.
        """
        every = [item for g in groups for item in g.items] + list(unattributed)
        with self.database.write() as conn:
            new = _remember(conn, organization_id, every, now)
            spent: dict[str, list[str]] = {}
            for group in sorted(groups, key=lambda g: g.instance_id):  # lock order
                delta = _sum(item.usage for item in group.items if item.id in new)
                previous = lock_instance(conn, organization_id, group.instance_id, now, first_seen)
                _check_agent(previous, group)
                missions = [i.mission_id for i in group.items if i.mission_id]
                conn.execute(
                    update(instances)
                    .where(
                        instances.c.organization_id == organization_id,
                        instances.c.instance_id == group.instance_id,
                    )
                    .values(
                        agent_id=group.agent_id,
                        run_id=group.run_id,
                        mission_id=missions[-1] if missions else previous.mission_id,
                        interval_s=previous.interval_s or interval,
                        executed=previous.executed + delta[0],
                        refused=previous.refused + delta[1],
                        failed=previous.failed + delta[2],
                        cost_usd=previous.cost_usd + delta[3],
                        status="running",
                        error=None,
                        last_seen=now,
                    )
                )
                if any(delta):
                    add_usage(conn, organization_id, group.agent_id, now, delta)
                    spent.setdefault(group.agent_id, []).append(group.instance_id)
        return LedgerResult(
            created=len(new),
            unattributed=sum(1 for item in unattributed if item.id in new),
            spent=spent,
        )


def _remember(conn: Connection, org: str, items: Sequence[LedgerItem], now: datetime) -> set[str]:
    """Remember each entry id (unique in ``items``); the ids not seen before."""
    if not items:
        return set()
    t = ledger_entries.c
    stmt = (
        upsert(conn, ledger_entries)
        .on_conflict_do_nothing(index_elements=[t.organization_id, t.id])
        .returning(t.id)
    )
    values = [
        {"organization_id": org, "id": i.id, "agent_id": i.agent_id, "received_at": now}
        for i in items
    ]
    return {row.id for row in conn.execute(stmt, values)}


def _sum(usages: Iterable[Usage4]) -> Usage4:
    executed = refused = failed = 0
    cost = 0.0
    for e, r, f, c in usages:
        executed, refused, failed, cost = executed + e, refused + r, failed + f, cost + c
    return executed, refused, failed, cost


def _check_agent(instance: InstanceRow, group: LedgerGroup) -> None:
    """Refuse counting a run into an instance another agent already reports as its own."""
    if instance.agent_id is not None and instance.agent_id != group.agent_id:
        raise AgentNotAllowedError(
            "run_id",
            f"run_id: run {group.run_id!r} of agent {group.agent_id!r} reports as instance "
            f"{group.instance_id!r}, which belongs to agent {instance.agent_id!r}",
        )
