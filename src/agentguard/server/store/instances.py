"""Fleet instances: each process of an agent, as its heartbeats, acks and stream left it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, func, or_, select, update

from ...errors import InvalidInputError
from ...scope import EMPTY_SCOPE, Scope
from ...selectors import Selector
from ..auth.binding import AgentBinding, AgentNotAllowedError
from .rows import Rows, upsert, where_equal
from .tables import instances

# The error of an instance whose change stream ended without a clean exit (and not back since).
STREAM_ENDED = "its change stream ended without a clean exit"


@dataclass(frozen=True)
class InstanceRow:
    """One instance of an agent as the database knows it."""

    instance_id: str
    agent_id: str | None
    run_id: str | None
    mission_id: str | None
    interval_s: float | None
    executed: int
    refused: int
    failed: int
    cancelled: int
    cost_usd: float
    version: int
    checkpoint: str | None
    status: str
    error: str | None
    first_seen: datetime
    last_seen: datetime
    labels: str | None = None  # JSON object

    @property
    def label_map(self) -> dict[str, str]:
        """The instance's labels (what its guard reported)."""
        return dict(json.loads(self.labels)) if self.labels else {}

    @classmethod
    def of(cls, row: Row[Any]) -> InstanceRow:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})

    def updated(self, values: Mapping[str, Any]) -> InstanceRow:
        return replace(self, **{k: v for k, v in values.items() if k in _INSTANCE_FIELDS})

    def may_run(self, target_type: str, target_id: str) -> bool:
        """Whether a kill of the target can apply to calls of this instance.

        A tool kill or an organization-wide stop applies to every instance; an agent, run or
        mission kill to each instance that does not report a different id of that kind.
        """
        if target_type in ("tool", "organization"):
            return True
        if target_type == "selector":
            return self.may_select(target_id)
        own = getattr(self, f"{target_type}_id")
        return own is None or own == target_id

    def may_select(self, selector_text: str) -> bool:
        """Whether a selector kill can apply to calls of this instance: its labels match, and
        it reports no other agent, run or mission than the selector names."""
        try:
            selector = Selector.of(selector_text)
        except InvalidInputError:
            return False
        if not selector.selects_labels(self.label_map):
            return False
        for key, value in zip(selector.shape, selector.values, strict=True):
            own = None if key == "tool" else getattr(self, f"{key}_id")
            if own is not None and own != value:
                return False
        return True


_INSTANCE_FIELDS = frozenset(f.name for f in fields(InstanceRow))


def new_instance(
    org: str,
    instance_id: str,
    first_seen: datetime,
    last_seen: datetime,
    scope: Scope = EMPTY_SCOPE,
) -> dict[str, Any]:
    """The row of an instance seen for the first time: running, nothing counted yet."""
    return {
        "organization_id": org,
        "instance_id": instance_id,
        "agent_id": scope.agent_id,
        "run_id": scope.run_id,
        "mission_id": scope.mission_id,
        "executed": 0,
        "refused": 0,
        "failed": 0,
        "cancelled": 0,
        "cost_usd": 0.0,
        "version": 0,
        "status": "running",
        "first_seen": first_seen,
        "last_seen": last_seen,
    }


def check_owner(binding: AgentBinding, instance: InstanceRow) -> None:
    """Refuse a report about an instance of an agent the reporting key does not speak for."""
    if instance.agent_id is not None and not binding.allows(instance.agent_id):
        raise AgentNotAllowedError(
            "instance_id",
            f"instance_id: instance {instance.instance_id!r} belongs to agent "
            f"{instance.agent_id!r}; this key speaks for {binding.speaks_for()}",
        )


def lock_instance(
    conn: Connection, org: str, instance_id: str, now: datetime, first_seen: datetime
) -> InstanceRow:
    """The instance's row, created if new, locked until commit (PostgreSQL).

    ``now`` is the fleet's clock (health); ``first_seen`` real time (ack latencies).
    """
    conn.execute(
        upsert(conn, instances)
        .values(**new_instance(org, instance_id, first_seen, now))
        .on_conflict_do_nothing(
            index_elements=[instances.c.organization_id, instances.c.instance_id]
        )
    )
    row = conn.execute(
        select(instances)
        .where(instances.c.organization_id == org, instances.c.instance_id == instance_id)
        .with_for_update()
    ).one()
    return InstanceRow.of(row)


class InstanceRows(Rows):
    """Instances seen on change streams, and the instances of an organization or a kill."""

    def touch_instances(
        self,
        present: Mapping[tuple[str, str], Scope],
        *,
        now: datetime,
        first_seen: datetime,
    ) -> None:
        """Mark instances seen at ``now`` (fleet clock), creating those not known yet.

        ``present`` maps (organization, instance id) to the scope the instance gave. Only
        ``last_seen`` of known instances changes: their scope, counters and status stay as
        their heartbeats and acknowledgements left them, except that one marked gone by
        :meth:`end_streams` is running again. One transaction, rows in key order.
        """
        if not present:
            return
        keys = sorted(present)
        with self.database.write() as conn:
            conn.execute(
                upsert(conn, instances).on_conflict_do_nothing(
                    index_elements=[instances.c.organization_id, instances.c.instance_id]
                ),
                [
                    new_instance(org, instance_id, first_seen, now, present[org, instance_id])
                    for org, instance_id in keys
                ],
            )
            conn.execute(
                update(instances)
                .where(
                    instances.c.organization_id == bindparam("b_org"),
                    instances.c.instance_id == bindparam("b_instance_id"),
                )
                .values(
                    last_seen=now,
                    status=case(
                        (instances.c.error == STREAM_ENDED, "running"), else_=instances.c.status
                    ),
                    error=case((instances.c.error == STREAM_ENDED, None), else_=instances.c.error),
                ),
                [{"b_org": org, "b_instance_id": instance_id} for org, instance_id in keys],
            )

    def end_streams(self, ended: Iterable[tuple[str, str]], *, seen_before: datetime) -> None:
        """Mark gone (``crashed``) the instances whose change stream ended without a clean exit.

        ``ended`` holds (organization, instance id) pairs. Only instances known from their
        stream alone (no heartbeats: no interval), still running, and not seen since
        ``seen_before`` (fleet clock: by a stream on another server) change.
        """
        keys = sorted(ended)
        if not keys:
            return
        t = instances.c
        with self.database.write() as conn:
            conn.execute(
                update(instances)
                .where(
                    t.organization_id == bindparam("b_org"),
                    t.instance_id == bindparam("b_instance_id"),
                    t.status == "running",
                    t.interval_s.is_(None),
                    t.last_seen <= seen_before,
                )
                .values(status="crashed", error=STREAM_ENDED),
                [{"b_org": org, "b_instance_id": instance_id} for org, instance_id in keys],
            )

    def list_instances(
        self,
        organization_id: str,
        *,
        agent_id: str | None = None,
        heartbeating: bool = True,
    ) -> list[InstanceRow]:
        """Instances of the organization (or of one agent), by agent and instance id.

        ``heartbeating`` leaves out instances only known from their acknowledgements.
        """
        t = instances.c
        where = where_equal(t.organization_id == organization_id, {t.agent_id: agent_id})
        if heartbeating:
            where = and_(where, t.interval_s.is_not(None), t.agent_id.is_not(None))
        with self.database.read() as conn:
            rows = conn.execute(
                select(instances).where(where).order_by(t.agent_id, t.instance_id)
            ).all()
        return [InstanceRow.of(r) for r in rows]

    def instance_agent(self, organization_id: str, instance_id: str) -> tuple[bool, str | None]:
        """Whether the instance is known, and the agent it belongs to."""
        with self.database.read() as conn:
            row = conn.execute(
                select(instances.c.agent_id).where(
                    instances.c.organization_id == organization_id,
                    instances.c.instance_id == instance_id,
                )
            ).first()
        return (False, None) if row is None else (True, row.agent_id)

    def instances_of_kill(
        self, organization_id: str, target_type: str, target_id: str
    ) -> list[InstanceRow]:
        """Instances a kill of the target may apply to: those not reporting another id."""
        t = instances.c
        where = t.organization_id == organization_id
        if target_type == "selector":  # labels are JSON: matched here, not in SQL
            with self.database.read() as conn:
                rows = conn.execute(select(instances).where(where).order_by(t.instance_id)).all()
            return [r for r in map(InstanceRow.of, rows) if r.may_select(target_id)]
        if target_type not in ("tool", "organization"):
            column = getattr(t, f"{target_type}_id")
            where = and_(where, or_(column.is_(None), column == target_id))
        with self.database.read() as conn:
            rows = conn.execute(select(instances).where(where).order_by(t.instance_id)).all()
        return [InstanceRow.of(r) for r in rows]

    def live_agents(self, *, since: datetime) -> list[tuple[str, str]]:
        """(organization, agent) of every agent with a running instance seen since ``since``."""
        t = instances.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(t.organization_id, t.agent_id)
                .where(t.status == "running", t.agent_id.is_not(None), t.last_seen >= since)
                .distinct()
                .order_by(t.organization_id, t.agent_id)
            ).all()
        return [(r.organization_id, r.agent_id) for r in rows]

    def instances_of_run(self, organization_id: str, run_id: str) -> list[InstanceRow]:
        """The instances that reported ``run_id`` as their run."""
        t = instances.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(instances)
                .where(t.organization_id == organization_id, t.run_id == run_id)
                .order_by(t.instance_id)
            ).all()
        return [InstanceRow.of(r) for r in rows]

    def liveness_counts(
        self,
        organization_id: str,
        *,
        now: datetime,
        stale_after: float,
        vanished_after: float,
        default_interval: float,
    ) -> list[tuple[Scope, str, int]]:
        """How many instances are ``active``, ``stale``, ``crashed`` or ``exited`` (kills aside).

        Judged as the fleet judges one: silent for more than ``stale_after`` intervals is stale,
        for more than ``vanished_after`` crashed (``default_interval`` for instances without
        one), unless it reported ``exited`` or ``crashed``. One aggregate query: counts by
        scope (agent, run and mission ids) for active and stale instances, so the caller can
        tell killed ones; by state alone for the others.
        """
        t = instances.c
        seen = _epoch(t.last_seen, sqlite=self.database.is_sqlite)
        interval = func.coalesce(t.interval_s, default_interval)
        moment = now.timestamp()
        state = case(
            (t.status != "running", t.status),
            (seen >= moment - stale_after * interval, "active"),
            (seen >= moment - vanished_after * interval, "stale"),
            else_="crashed",
        )
        judged = (
            select(t.agent_id, t.run_id, t.mission_id, state.label("state"))
            .where(t.organization_id == organization_id)
            .subquery()
        )
        live = judged.c.state.in_(("active", "stale"))
        scoped = select(
            judged.c.state,
            *(
                case((live, column), else_=None).label(column.name)
                for column in (judged.c.agent_id, judged.c.run_id, judged.c.mission_id)
            ),
        ).subquery()
        c = scoped.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(c.agent_id, c.run_id, c.mission_id, c.state, func.count()).group_by(
                    c.agent_id, c.run_id, c.mission_id, c.state
                )
            ).all()
        return [(Scope(r.agent_id, r.run_id, r.mission_id), str(r.state), int(r[4])) for r in rows]


def _epoch(column: Any, *, sqlite: bool) -> Any:
    """Seconds since 1970 of a stored time (SQLite keeps it as naive UTC text)."""
    if sqlite:
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)
