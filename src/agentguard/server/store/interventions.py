"""Interventions: the calls guards refused or stopped, as their reporters sent them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select

from ...records import Intervention, InterventionType, utcnow
from ..webhooks.events import intervention_events
from .counters import INTERVENTIONS, bump
from .rows import Rows, upsert, where_equal
from .tables import interventions, kill_switches
from .webhooks import Outbox, queue_events


class InterventionRows(Rows):
    """Store interventions once per id; list and count them."""

    outbox: Outbox  # set by SQLStore: wakes this process's webhook sender

    def add_interventions(
        self,
        organization_id: str,
        items: Iterable[Intervention],
        *,
        reporter: str | None = None,
    ) -> int:
        """Store new interventions; how many were new.

        New observations and refusals for want of kill state queue their webhook events
        (``rule.observed``, ``fail_closed``) in the same transaction; ``reporter`` (who sent
        them) is named in those events.
        """
        batch = list({iv.id: iv for iv in items}.values())
        if not batch:
            return 0
        now = utcnow()
        with self.database.write() as conn:
            # A HARD_BLOCK names the user who killed its target: fill it in from this
            # organization's own records when the reporter left it out.
            wanted = {iv.kill_switch_id for iv in batch if iv.kill_switch_id and not iv.killed_by}
            killers: dict[str, str] = {}
            if wanted:
                result = conn.execute(
                    select(kill_switches.c.id, kill_switches.c.killed_by).where(
                        kill_switches.c.organization_id == organization_id,
                        kill_switches.c.id.in_(wanted),
                    )
                )
                killers = {row.id: row.killed_by for row in result}
            values = [
                {
                    **iv.model_dump(),
                    "type": iv.type.value,
                    "killed_by": iv.killed_by or killers.get(iv.kill_switch_id or ""),
                    "organization_id": organization_id,
                    "received_at": now,
                }
                for iv in batch
            ]
            stmt = (
                upsert(conn, interventions)
                .on_conflict_do_nothing(
                    index_elements=[interventions.c.organization_id, interventions.c.id]
                )
                .returning(interventions.c.id, interventions.c.type)
            )
            rows = conn.execute(stmt, values).all()
            added = {row.id for row in rows}
            by_type = Counter(row.type for row in rows)
            bump(conn, organization_id, {INTERVENTIONS.key(type=t): n for t, n in by_type.items()})
            hard_block = InterventionType.HARD_BLOCK
            noted = [iv for iv in batch if iv.id in added and iv.type != hard_block]
            queued = 0
            if noted:
                events = intervention_events(organization_id, noted, reporter=reporter)
                queued = queue_events(conn, organization_id, events)
        if queued:
            self.outbox.queued()
        return len(added)

    def list_interventions(
        self,
        organization_id: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        type: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[Intervention], int]:
        t = interventions.c
        where = where_equal(
            t.organization_id == organization_id,
            {t.target_type: target_type, t.target_id: target_id, t.type: type, t.action: action},
        )
        if since is not None:
            where = and_(where, t.occurred_at >= since)
        with self.database.read() as conn:
            rows = conn.execute(
                select(interventions)
                .where(where)
                .order_by(t.occurred_at.desc(), t.seq.desc())
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(interventions).where(where)
            ).scalar_one()
        fields = Intervention.model_fields
        return [
            Intervention(**{k: v for k, v in r._mapping.items() if k in fields}) for r in rows
        ], int(count)

    def intervention_counts(
        self,
        organization_id: str,
        *,
        target_type: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int]:
        """Interventions per (target, type): count and latest time, most first; and group count."""
        t = interventions.c
        where = where_equal(
            t.organization_id == organization_id, {t.target_type: target_type, t.type: type}
        )
        if since is not None:
            where = and_(where, t.occurred_at >= since)
        n = func.count().label("count")
        groups = (
            select(
                t.target_type,
                t.target_id,
                t.type,
                n,
                func.max(t.occurred_at).label("last_occurred_at"),
            )
            .where(where)
            .group_by(t.target_type, t.target_id, t.type)
        )
        with self.database.read() as conn:
            rows = conn.execute(
                groups.order_by(n.desc(), t.target_type, t.target_id, t.type)
                .offset(skip)
                .limit(limit)
            ).all()
            total = conn.execute(select(func.count()).select_from(groups.subquery())).scalar_one()
        return [_counts_row(r) for r in rows], int(total)


def _counts_row(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "target_type": m["target_type"],
        "target_id": m["target_id"],
        "type": m["type"],
        "count": int(m["count"]),
        "last_occurred_at": m["last_occurred_at"],
    }
