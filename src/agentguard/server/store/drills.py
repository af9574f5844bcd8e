"""Drills: each one, the instances it expects an answer from, and their answers.

A drill is written with one ``drill_acks`` row per live instance of its target, so its result
is a count of those rows: answered, or not. A scheduled drill carries its interval's number
(``slot``); the unique (organization, target, slot) key lets exactly one replica start it.
It is judged once: the finishing ``UPDATE ... WHERE status = 'running'`` is won by one writer,
which writes the audit record and queues ``drill.failed`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, and_, func, insert, select, update

from ...errors import AgentGuardError
from ...protocol import Drill
from ...records import new_id
from ..auth.binding import AgentBinding, AgentNotAllowedError
from ..webhooks.events import WebhookEvent
from .audit import write_audit
from .feed import DRILLS_CHANNEL
from .rows import Rows, upsert
from .tables import drill_acks, drills
from .webhooks import Outbox, queue_event

RUNNING = "running"
MAX_NOT_ANSWERING = 100  # instance ids named in a drill's answer


class DrillNotFoundError(AgentGuardError):
    """No such drill in the organization (HTTP 404)."""

    def __init__(self, drill_id: str) -> None:
        super().__init__(f"no drill {drill_id!r} in this organization")
        self.drill_id = drill_id


@dataclass(frozen=True)
class Expected:
    """A live instance a drill waits for."""

    instance_id: str
    agent_id: str | None


class DrillRows(Rows):
    """Start, answer, judge and list drills."""

    outbox: Outbox  # the store's: told when a judged drill queued ``drill.failed``

    def start_drill(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        actor: str,
        now: datetime,
        timeout: float,
        expected: Sequence[Expected],
        slot: int | None = None,
        request_id: str | None = None,
    ) -> Drill | None:
        """Write a running drill and the instances it expects; ``None`` when a scheduled
        drill of that slot exists already (another replica started it)."""
        drill_id = new_id()
        d = drills.c
        with self.database.write() as conn:
            # A scheduled drill's slot taken by another replica: nothing is written (no
            # error either: PostgreSQL logs none for ON CONFLICT DO NOTHING).
            inserted = conn.execute(
                upsert(conn, drills)
                .values(
                    id=drill_id,
                    organization_id=organization_id,
                    target_type=target_type,
                    target_id=target_id,
                    status=RUNNING if expected else "no_instances",
                    started_by=actor,
                    started_at=now,
                    deadline_at=now + timedelta(seconds=timeout),
                    finished_at=None if expected else now,
                    live=len(expected),
                    acknowledged=0,
                    slot=slot,
                )
                .on_conflict_do_nothing(
                    index_elements=[d.organization_id, d.target_type, d.target_id, d.slot]
                )
                .returning(d.id)
            ).first()
            if inserted is None:
                return None
            if expected:
                conn.execute(
                    insert(drill_acks),
                    [
                        {
                            "organization_id": organization_id,
                            "drill_id": drill_id,
                            "instance_id": e.instance_id,
                            "agent_id": e.agent_id,
                        }
                        for e in expected
                    ],
                )
            write_audit(
                conn,
                organization_id,
                action="drill",
                actor=actor,
                target_type=target_type,
                target_id=target_id,
                detail=f"drill {drill_id} sent to {len(expected)} live instance(s), "
                f"waiting {timeout:g} s" + (" (scheduled)" if slot is not None else ""),
                request_id=request_id,
                created_at=now,
            )
            self.database.notify(conn, DRILLS_CHANNEL, organization_id)
        return self.drill(organization_id, drill_id)

    def acknowledge_drill(
        self,
        organization_id: str,
        drill_id: str,
        instance_id: str,
        *,
        now: datetime,
        binding: AgentBinding | None,
    ) -> bool:
        """Record an instance's answer; whether the drill expected it (an answer after the
        drill was judged is kept but changes nothing)."""
        a, d = drill_acks.c, drills.c
        with self.database.write() as conn:
            started = conn.execute(
                select(d.started_at).where(d.organization_id == organization_id, d.id == drill_id)
            ).scalar()
            if started is None:
                raise DrillNotFoundError(drill_id)
            row = conn.execute(
                select(a.agent_id, a.acknowledged_at).where(
                    a.organization_id == organization_id,
                    a.drill_id == drill_id,
                    a.instance_id == instance_id,
                )
            ).first()
            if row is None:
                return False
            if (
                binding is not None
                and row.agent_id is not None
                and not binding.allows(row.agent_id)
            ):
                raise AgentNotAllowedError(
                    "instance_id",
                    f"instance_id: instance {instance_id!r} belongs to agent {row.agent_id!r}; "
                    f"this key speaks for {binding.speaks_for()}",
                )
            if row.acknowledged_at is None:
                latency = max(0.0, (now - started).total_seconds() * 1000)
                conn.execute(
                    update(drill_acks)
                    .where(
                        a.organization_id == organization_id,
                        a.drill_id == drill_id,
                        a.instance_id == instance_id,
                        a.acknowledged_at.is_(None),
                    )
                    .values(acknowledged_at=now, latency_ms=latency)
                )
        return True

    def drill_answers(self, organization_id: str, drill_id: str) -> tuple[int, int]:
        """How many instances the drill expects, and how many have answered."""
        a = drill_acks.c
        with self.database.read() as conn:
            row = conn.execute(
                select(func.count(), func.count(a.acknowledged_at)).where(
                    a.organization_id == organization_id, a.drill_id == drill_id
                )
            ).one()
        return int(row[0]), int(row[1])

    def finish_drill(
        self,
        organization_id: str,
        drill_id: str,
        *,
        now: datetime,
        failed_event: Callable[[Drill], WebhookEvent],
    ) -> tuple[Drill, bool]:
        """Judge a running drill by the answers so far; the drill, and whether this call
        judged it (``False``: it was judged already, by this process or another)."""
        a, d = drill_acks.c, drills.c
        queued = 0
        with self.database.write() as conn:
            live, acked, slowest = conn.execute(
                select(func.count(), func.count(a.acknowledged_at), func.max(a.latency_ms)).where(
                    a.organization_id == organization_id, a.drill_id == drill_id
                )
            ).one()
            status = "armed" if acked >= live else "failed"
            judged = conn.execute(
                update(drills)
                .where(d.organization_id == organization_id, d.id == drill_id, d.status == RUNNING)
                .values(
                    status=status,
                    finished_at=now,
                    live=live,
                    acknowledged=acked,
                    slowest_ms=slowest,
                )
            ).rowcount
            if judged:
                drill = _drill(
                    _row(conn, organization_id, drill_id), _missing(conn, organization_id, drill_id)
                )
                write_audit(
                    conn,
                    organization_id,
                    action=f"drill.{status}",
                    actor=drill.started_by,
                    target_type=drill.target_type,
                    target_id=drill.target_id,
                    detail=drill.summary(),
                    created_at=now,
                )
                if status == "failed":
                    queued = queue_event(conn, organization_id, failed_event(drill))
        if queued:
            self.outbox.queued()
        return self.drill(organization_id, drill_id), bool(judged)

    def drill(self, organization_id: str, drill_id: str) -> Drill:
        """One drill, with the instances that have not answered (yet)."""
        with self.database.read() as conn:
            row = _row(conn, organization_id, drill_id)
            return _drill(row, _missing(conn, organization_id, drill_id))

    def running_drills(self, organization_ids: Iterable[str]) -> list[tuple[str, Drill]]:
        """The drills still waiting for answers in these organizations, oldest first."""
        orgs = sorted(set(organization_ids))
        if not orgs:
            return []
        d = drills.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(drills)
                .where(d.status == RUNNING, d.organization_id.in_(orgs))
                .order_by(d.started_at)
            ).all()
        return [(r.organization_id, _drill(r._mapping, [])) for r in rows]

    def overdue_drills(self, now: datetime) -> list[tuple[str, str]]:
        """(organization, drill id) of running drills past their deadline (their process
        stopped before judging them)."""
        d = drills.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(d.organization_id, d.id).where(d.status == RUNNING, d.deadline_at < now)
            ).all()
        return [(r.organization_id, r.id) for r in rows]

    def list_drills(
        self,
        organization_id: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[Drill], int]:
        """The organization's drills, newest first (of one target, if given)."""
        d = drills.c
        where = d.organization_id == organization_id
        if target_type is not None:
            where = and_(where, d.target_type == target_type)
        if target_id is not None:
            where = and_(where, d.target_id == target_id)
        with self.database.read() as conn:
            count = conn.execute(select(func.count()).select_from(drills).where(where)).scalar()
            rows = conn.execute(
                select(drills)
                .where(where)
                .order_by(d.started_at.desc(), d.id)
                .offset(skip)
                .limit(limit)
            ).all()
            found = [_drill(r._mapping, _missing(conn, organization_id, r.id)) for r in rows]
        return found, int(count or 0)

    def last_drills(self, organization_id: str, agent_ids: Sequence[str]) -> dict[str, Drill]:
        """Each agent's newest judged drill (of the agent as a target)."""
        if not agent_ids:
            return {}
        d = drills.c
        newest = (
            select(d.target_id, func.max(d.started_at).label("started_at"))
            .where(
                d.organization_id == organization_id,
                d.target_type == "agent",
                d.target_id.in_(sorted(set(agent_ids))),
                d.status != RUNNING,
            )
            .group_by(d.target_id)
            .subquery()
        )
        with self.database.read() as conn:
            rows = conn.execute(
                select(drills)
                .join(
                    newest,
                    and_(d.target_id == newest.c.target_id, d.started_at == newest.c.started_at),
                )
                .where(
                    d.organization_id == organization_id,
                    d.target_type == "agent",
                    d.status != RUNNING,
                )
            ).all()
            return {
                r.target_id: _drill(r._mapping, _missing(conn, organization_id, r.id)) for r in rows
            }


def _row(conn: Connection, organization_id: str, drill_id: str) -> RowMapping:
    d = drills.c
    row = conn.execute(
        select(drills).where(d.organization_id == organization_id, d.id == drill_id)
    ).first()
    if row is None:
        raise DrillNotFoundError(drill_id)
    return row._mapping


def _missing(conn: Connection, organization_id: str, drill_id: str) -> list[str]:
    a = drill_acks.c
    return list(
        conn.execute(
            select(a.instance_id)
            .where(
                a.organization_id == organization_id,
                a.drill_id == drill_id,
                a.acknowledged_at.is_(None),
            )
            .order_by(a.instance_id)
            .limit(MAX_NOT_ANSWERING)
        ).scalars()
    )


def _drill(m: RowMapping, missing: list[str]) -> Drill:
    started, deadline = m["started_at"], m["deadline_at"]
    return Drill(
        id=m["id"],
        target_type=m["target_type"],
        target_id=m["target_id"],
        status=m["status"],
        started_by=m["started_by"],
        started_at=started,
        finished_at=m["finished_at"],
        timeout_s=round((deadline - started).total_seconds(), 3),
        live=m["live"],
        acknowledged=m["acknowledged"],
        slowest_ms=m["slowest_ms"],
        not_answering=missing if m["status"] != "armed" else [],
        scheduled=m["slot"] is not None,
    )
