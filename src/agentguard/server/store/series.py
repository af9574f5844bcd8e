"""Series: an agent's (or the organization's) usage, interventions and kills, bucketed in time.

Usage comes from heartbeats (10-second slices, :mod:`.usage`), refusals and cancellations from
the interventions guards reported (by when they occurred), kills and revives from the audit log
with the reason of the kill switch they changed. Buckets are counted by the database; a bucket's
index is ``floor((t - start) / step)`` in whole seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    cast,
    exists,
    func,
    or_,
    select,
    tuple_,
)

from .rows import Rows, aware
from .tables import audit_log, instances, interventions, kill_changes, kill_switches, usage
from .usage import Usage

# Interventions that are calls not made or stopped, by the series field that counts them.
# (CANCELLED is what a guard reports for a call a kill stopped while it ran.)
COUNTED_INTERVENTIONS = {
    "HARD_BLOCK": "refused",
    "CANCELLED": "cancelled",
    "UNAVAILABLE": "unavailable",
}
KILL_ACTIONS = ("kill", "revive")


@dataclass(frozen=True)
class KillEvent:
    """A kill or revive from the audit log, with the reason of the kill switch it changed."""

    kind: str
    at: datetime
    target_type: str
    target_id: str
    actor: str
    reason: str | None
    kill_switch_id: str | None
    version: int | None


@dataclass
class SeriesRowsFound:
    """What the database holds for a series: per bucket index, and the events, oldest first."""

    usage: dict[int, Usage] = field(default_factory=dict)
    interventions: dict[int, dict[str, int]] = field(default_factory=dict)
    events: list[KillEvent] = field(default_factory=list)
    events_count: int = 0  # in the window; ``events`` holds the newest of them
    agent_seen: bool = False  # the agent has an instance (always False for the organization)


class SeriesRows(Rows):
    """Bucketed usage, interventions and kill events of an agent or a whole organization."""

    def series(
        self,
        organization_id: str,
        agent_id: str | None,
        *,
        start: datetime,
        end: datetime,
        step: int,
        max_events: int,
    ) -> SeriesRowsFound:
        """Counts per bucket of ``step`` seconds from ``start`` to ``end``; ``agent_id`` None:
        the whole organization (and every kill and revive in it)."""
        found = SeriesRowsFound()
        with self.database.read() as conn:
            found.usage = _usage(conn, organization_id, agent_id, start, end, step)
            found.interventions = _interventions(conn, organization_id, agent_id, start, end, step)
            found.events, found.events_count = _events(
                conn, organization_id, agent_id, start, end, max_events
            )
            if agent_id is not None:
                i = instances.c
                seen = exists().where(i.organization_id == organization_id, i.agent_id == agent_id)
                found.agent_seen = bool(conn.execute(select(seen)).scalar())
        return found


def _bucket(conn: Connection, column: Any, start: datetime, step: int) -> ColumnElement[Any]:
    """The index of the bucket holding ``column`` (a UTC time at or after ``start``)."""
    origin = int(aware(start).timestamp())
    if conn.dialect.name == "postgresql":
        return func.floor((func.extract("epoch", column) - origin) / step)
    # SQLite: whole seconds since the epoch, divided as integers (the times are after start).
    return (cast(func.strftime("%s", column), Integer) - origin) // step


def _usage(
    conn: Connection, org: str, agent_id: str | None, start: datetime, end: datetime, step: int
) -> dict[int, Usage]:
    u = usage.c
    where = and_(u.organization_id == org, u.bucket >= start, u.bucket < end)
    if agent_id is not None:
        where = and_(where, u.agent_id == agent_id)
    slices = (
        select(
            _bucket(conn, u.bucket, start, step).label("i"),
            u.executed,
            u.refused,
            u.failed,
            u.cost_usd,
        )
        .where(where)
        .subquery()
    )
    rows = conn.execute(
        select(
            slices.c.i,
            func.sum(slices.c.executed).label("executed"),
            func.sum(slices.c.refused).label("refused"),
            func.sum(slices.c.failed).label("failed"),
            func.sum(slices.c.cost_usd).label("cost_usd"),
        ).group_by(slices.c.i)
    ).all()
    return {
        int(r.i): Usage(
            int(r.executed or 0), int(r.refused or 0), int(r.failed or 0), float(r.cost_usd or 0)
        )
        for r in rows
    }


def _interventions(
    conn: Connection, org: str, agent_id: str | None, start: datetime, end: datetime, step: int
) -> dict[int, dict[str, int]]:
    iv = interventions.c
    where = and_(
        iv.organization_id == org,
        iv.occurred_at >= start,
        iv.occurred_at < end,
        iv.type.in_(list(COUNTED_INTERVENTIONS)),
    )
    if agent_id is not None:
        where = and_(where, iv.agent_id == agent_id)
    rows_in = (
        select(_bucket(conn, iv.occurred_at, start, step).label("i"), iv.type)
        .where(where)
        .subquery()
    )
    found: dict[int, dict[str, int]] = {}
    for r in conn.execute(
        select(rows_in.c.i, rows_in.c.type, func.count().label("n")).group_by(
            rows_in.c.i, rows_in.c.type
        )
    ):
        found.setdefault(int(r.i), {})[COUNTED_INTERVENTIONS[r.type]] = int(r.n)
    return found


def _concerns(org: str, agent_id: str, start: datetime) -> ColumnElement[bool]:
    """Audit entries whose target concerns the agent: the agent itself, the runs and missions
    its instances report, and every target that refused or stopped its calls since ``start``."""
    a, i, iv = audit_log.c, instances.c, interventions.c
    mine = and_(i.organization_id == org, i.agent_id == agent_id)
    runs = select(i.run_id).where(mine, i.run_id.is_not(None))
    missions = select(i.mission_id).where(mine, i.mission_id.is_not(None))
    stopped_by = select(iv.target_type, iv.target_id).where(
        iv.organization_id == org, iv.agent_id == agent_id, iv.occurred_at >= start
    )
    return or_(
        and_(a.target_type == "agent", a.target_id == agent_id),
        and_(a.target_type == "run", a.target_id.in_(runs)),
        and_(a.target_type == "mission", a.target_id.in_(missions)),
        tuple_(a.target_type, a.target_id).in_(stopped_by),
    )


def _events(
    conn: Connection, org: str, agent_id: str | None, start: datetime, end: datetime, limit: int
) -> tuple[list[KillEvent], int]:
    a, kc, ks = audit_log.c, kill_changes.c, kill_switches.c
    where = and_(
        a.organization_id == org,
        a.action.in_(KILL_ACTIONS),
        a.created_at >= start,
        a.created_at < end,
    )
    if agent_id is not None:
        where = and_(where, _concerns(org, agent_id, start))
    query: Select[Any] = (
        select(
            a.action,
            a.created_at,
            a.target_type,
            a.target_id,
            a.actor,
            a.detail,
            a.version,
            ks.id.label("kill_switch_id"),
            ks.reason,
        )
        .select_from(
            audit_log.outerjoin(
                kill_changes, and_(kc.organization_id == a.organization_id, kc.version == a.version)
            ).outerjoin(kill_switches, ks.id == kc.kill_switch_id)
        )
        .where(where)
        .order_by(a.seq.desc())
        .limit(limit)
    )
    rows = conn.execute(query).all()
    count = conn.execute(select(func.count()).select_from(audit_log).where(where)).scalar_one()
    events = [
        KillEvent(
            kind=r.action,
            at=aware(r.created_at),
            target_type=r.target_type,
            target_id=r.target_id,
            actor=r.actor,
            # The kill switch's own reason; a kill's audit entry holds it too (and any notes).
            reason=r.reason
            if r.kill_switch_id is not None
            else (r.detail if r.action == "kill" else None),
            kill_switch_id=r.kill_switch_id,
            version=r.version,
        )
        for r in reversed(rows)
    ]
    return events, int(count)
