"""The audit log: who did what, written in the transaction of what it records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, func, insert, select, update

from ...records import AuditEntry, new_id, utcnow
from .counters import RULE_TRIPS, bump, rule_of
from .rows import Rows, aware, where_equal
from .tables import audit_log, kill_switches

RULE_OBSERVED = "rule.observed"  # the audit action of a server rule's observation


def write_audit(
    conn: Connection,
    organization_id: str,
    *,
    action: str,
    actor: str,
    target_type: str | None = None,
    target_id: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    version: int | None = None,
    created_at: datetime | None = None,
) -> None:
    """Add an audit entry inside the caller's transaction.

    A rule's kill or observation also counts as a rule trip (:data:`RULE_TRIPS`).
    """
    conn.execute(
        insert(audit_log).values(
            id=new_id(),
            organization_id=organization_id,
            action=action,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            detail=detail,
            request_id=request_id,
            version=version,
            created_at=created_at or utcnow(),
        )
    )
    rule = rule_of(actor)
    if rule is not None and action in ("kill", RULE_OBSERVED):
        mode = "enforce" if action == "kill" else "observe"
        bump(conn, organization_id, {RULE_TRIPS.key(rule=rule, mode=mode): 1})


def add_note(conn: Connection, organization_id: str, version: int, note: str) -> None:
    """Add ``note`` to the detail of the audit entry of the kill or revive of ``version``."""
    detail = audit_log.c.detail
    conn.execute(
        update(audit_log)
        .where(
            audit_log.c.organization_id == organization_id,
            audit_log.c.version == version,
            audit_log.c.action.in_(("kill", "revive")),
        )
        .values(detail=func.coalesce(detail + "; ", "") + note)
    )


class AuditRows(Rows):
    """Reading the audit log, and what server rules learn from it."""

    def audit(
        self,
        organization_id: str,
        *,
        action: str,
        actor: str,
        target_type: str | None = None,
        target_id: str | None = None,
        detail: str | None = None,
        request_id: str | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """Add an audit entry on its own (what it records is not a row of ours)."""
        with self.database.write() as conn:
            write_audit(
                conn,
                organization_id,
                action=action,
                actor=actor,
                target_type=target_type,
                target_id=target_id,
                detail=detail,
                request_id=request_id,
                created_at=created_at,
            )

    def list_audit(
        self,
        organization_id: str,
        *,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int]:
        t = audit_log.c
        where = where_equal(
            t.organization_id == organization_id,
            {t.action: action, t.target_type: target_type, t.target_id: target_id},
        )
        if since is not None:
            where = and_(where, t.created_at >= since)
        with self.database.read() as conn:
            rows = conn.execute(
                select(audit_log).where(where).order_by(t.seq.desc()).offset(skip).limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(audit_log).where(where)
            ).scalar_one()
        fields = AuditEntry.model_fields
        return [
            AuditEntry(**{k: v for k, v in r._mapping.items() if k in fields}) for r in rows
        ], int(count)

    def last_rule_action(
        self, organization_id: str, actor: str, target_type: str, target_id: str
    ) -> datetime | None:
        """When a rule last killed or observed the target.

        Read from what only the server writes (kill switches, and the audit entries of its
        observations), never from interventions, which clients report.
        """
        ks, au = kill_switches.c, audit_log.c
        with self.database.read() as conn:
            killed = conn.execute(
                select(func.max(ks.killed_at)).where(
                    ks.organization_id == organization_id,
                    ks.killed_by == actor,
                    ks.target_type == target_type,
                    ks.target_id == target_id,
                )
            ).scalar()
            observed = conn.execute(
                select(func.max(au.created_at)).where(
                    au.organization_id == organization_id,
                    au.action == RULE_OBSERVED,
                    au.actor == actor,
                    au.target_type == target_type,
                    au.target_id == target_id,
                )
            ).scalar()
        times = [aware(t) for t in (killed, observed) if t is not None]
        return max(times) if times else None
