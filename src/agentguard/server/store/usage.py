"""Usage: the work each agent's heartbeats reported, in 10-second slices."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select

from .rows import Rows, aware, upsert
from .tables import usage

USAGE_SLICE = 10  # seconds per usage row


@dataclass(frozen=True)
class Usage:
    """Work reported by heartbeats over some time."""

    executed: int = 0
    refused: int = 0
    failed: int = 0
    cost_usd: float = 0.0


def usage_bucket(when: datetime) -> datetime:
    """The start of the 10-second usage slice holding ``when``."""
    when = aware(when)
    return when.replace(second=when.second - when.second % USAGE_SLICE, microsecond=0)


def add_usage(
    conn: Connection, org: str, agent_id: str, now: datetime, delta: tuple[int, int, int, float]
) -> None:
    """Add (executed, refused, failed, cost) to the agent's slice holding ``now``."""
    executed, refused, failed, cost = delta
    stmt = upsert(conn, usage).values(
        organization_id=org,
        agent_id=agent_id,
        bucket=usage_bucket(now),
        executed=executed,
        refused=refused,
        failed=failed,
        cost_usd=cost,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[usage.c.organization_id, usage.c.agent_id, usage.c.bucket],
            set_={
                "executed": usage.c.executed + stmt.excluded.executed,
                "refused": usage.c.refused + stmt.excluded.refused,
                "failed": usage.c.failed + stmt.excluded.failed,
                "cost_usd": usage.c.cost_usd + stmt.excluded.cost_usd,
            },
        )
    )


class UsageRows(Rows):
    """Usage per agent over some time."""

    def usage_since(
        self, organization_id: str, agent_ids: Iterable[str] | None, since: datetime
    ) -> dict[str, Usage]:
        """Usage per agent from heartbeats received since ``since`` (10-second slices)."""
        u = usage.c
        where = and_(u.organization_id == organization_id, u.bucket >= usage_bucket(since))
        if agent_ids is not None:
            wanted = list(agent_ids)
            if not wanted:
                return {}
            where = and_(where, u.agent_id.in_(wanted))
        with self.database.read() as conn:
            rows = conn.execute(
                select(
                    u.agent_id,
                    func.sum(u.executed).label("executed"),
                    func.sum(u.refused).label("refused"),
                    func.sum(u.failed).label("failed"),
                    func.sum(u.cost_usd).label("cost_usd"),
                )
                .where(where)
                .group_by(u.agent_id)
            ).all()
        return {
            r.agent_id: Usage(
                int(r.executed or 0),
                int(r.refused or 0),
                int(r.failed or 0),
                float(r.cost_usd or 0),
            )
            for r in rows
        }
