"""``SQLStore``: the :class:`~agentguard.store.KillStore` on SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..errors import AgentGuardError, AlreadyKilledError, NotKilledError
from ..protocol import HeartbeatReport
from ..records import AuditEntry, Intervention, KillChange, KillSwitch, Snapshot, new_id, utcnow
from ..scope import EMPTY_SCOPE, Scope
from ..store import ChangeListener
from ..targets import validate_reason, validate_target
from .binding import AgentBinding, AgentNotAllowedError
from .database import Database
from .feed import CHANGES_CHANNEL, ChangeFeed
from .tables import (
    audit_log,
    checkpoints,
    console_sign_outs,
    instances,
    interventions,
    kill_acks,
    kill_changes,
    kill_switches,
    org_versions,
    usage,
)

# A lost race for the one active kill of a target surfaces as an IntegrityError; the retry
# then finds the winner's record (or, if it was revived meanwhile, kills afresh).
_KILL_ATTEMPTS = 5
_WARM_UP = "agentguard-warm-up"  # the organization, target and actor of the rolled-back warm-up
RULE_OBSERVED = "rule.observed"  # the audit action of a server rule's observation


class _RolledBack(Exception):
    """Raised to roll a transaction back on purpose."""


class SQLStore:
    """Kill state, audit log and interventions of many organizations in one database.

    ``kill``/``revive`` commit the record, the organization's next version, a change-log row
    and an audit entry in one transaction, then hand the change to :attr:`feed`.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.feed = ChangeFeed(self)

    # -- kill state ----------------------------------------------------------------------------

    def kill(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        request_id: str | None = None,
        audit_note: str | None = None,
    ) -> KillChange:
        """Kill a target; ``audit_note`` is added to the audit entry's detail (after the reason)."""
        target_type, target_id = validate_target(target_type, target_id)
        reason = validate_reason(reason)
        for _ in range(_KILL_ATTEMPTS):
            try:
                with self.database.write() as conn:
                    change = self._kill_in(
                        conn, organization_id, target_type, target_id, reason, actor, request_id
                    )
                    if audit_note:
                        self._note(conn, organization_id, change.version, audit_note)
            except IntegrityError:
                existing = self.get_active(organization_id, target_type, target_id)
                if existing is not None:
                    raise AlreadyKilledError(existing) from None
                continue  # the winner was revived in between: try again
            self.feed.publish(organization_id, change)
            return change
        raise RuntimeError(f"could not kill {target_type} {target_id!r}: too much contention")

    def _kill_in(
        self,
        conn: Connection,
        org: str,
        target_type: str,
        target_id: str,
        reason: str | None,
        actor: str,
        request_id: str | None,
    ) -> KillChange:
        now = utcnow()
        ks = KillSwitch(
            id=new_id(),
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            is_active=True,
            killed_by=actor,
            killed_at=now,
            organization_id=org,
        )
        # The version row is locked first (PostgreSQL: row lock until commit), so writers of
        # one organization commit in version order.
        version = self._next_version(conn, org)
        conn.execute(insert(kill_switches).values(**ks.model_dump()))
        self._log(conn, org, version, "kill", ks, actor, request_id, now)
        return KillChange(version=version, kind="kill", kill_switch=ks)

    def revive(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        actor: str,
        request_id: str | None = None,
    ) -> KillChange:
        target_type, target_id = validate_target(target_type, target_id, existing=True)
        with self.database.write() as conn:
            change = self._revive_in(
                conn, organization_id, target_type, target_id, actor, request_id
            )
        self.feed.publish(organization_id, change)
        return change

    def _revive_in(
        self,
        conn: Connection,
        org: str,
        target_type: str,
        target_id: str,
        actor: str,
        request_id: str | None,
    ) -> KillChange:
        now = utcnow()
        version = self._next_version(conn, org)
        row = conn.execute(
            update(kill_switches)
            .where(
                kill_switches.c.organization_id == org,
                kill_switches.c.target_type == target_type,
                kill_switches.c.target_id == target_id,
                kill_switches.c.is_active,
            )
            .values(is_active=False, revived_by=actor, revived_at=now)
            .returning(*kill_switches.c)
        ).first()
        if row is None:
            raise NotKilledError(target_type, target_id)  # rolls the version back too
        ks = _kill_switch(row)
        self._log(conn, org, version, "revive", ks, actor, request_id, now)
        return KillChange(version=version, kind="revive", kill_switch=ks)

    @staticmethod
    def _note(conn: Connection, org: str, version: int, note: str) -> None:
        """Add ``note`` to the detail of the audit entry of the change ``version``."""
        detail = audit_log.c.detail
        conn.execute(
            update(audit_log)
            .where(
                audit_log.c.organization_id == org,
                audit_log.c.version == version,
                audit_log.c.action == "kill",
            )
            .values(
                detail=func.coalesce(detail + "; ", "") + note,
            )
        )

    def warm_up(self) -> None:
        """Compile the statements of a kill and a revive (both rolled back, nothing is written),
        so the first kill after a start is as fast as the next ones."""
        try:
            with self.database.write() as conn:
                self._kill_in(conn, _WARM_UP, "agent", _WARM_UP, None, _WARM_UP, None)
                self._revive_in(conn, _WARM_UP, "agent", _WARM_UP, _WARM_UP, None)
                raise _RolledBack
        except _RolledBack:
            pass

    def _next_version(self, conn: Connection, org: str) -> int:
        upsert = _upsert(conn).values(organization_id=org, version=1)
        stmt = upsert.on_conflict_do_update(
            index_elements=[org_versions.c.organization_id],
            set_={"version": org_versions.c.version + 1},
        ).returning(org_versions.c.version)
        return int(conn.execute(stmt).scalar_one())

    def _log(
        self,
        conn: Connection,
        org: str,
        version: int,
        kind: str,
        ks: KillSwitch,
        actor: str,
        request_id: str | None,
        now: datetime,
    ) -> None:
        conn.execute(
            insert(kill_changes).values(
                organization_id=org,
                version=version,
                kind=kind,
                kill_switch_id=ks.id,
                created_at=now,
            )
        )
        self.write_audit(
            conn,
            org,
            action=kind,
            actor=actor,
            target_type=ks.target_type,
            target_id=ks.target_id,
            detail=ks.reason if kind == "kill" else None,
            request_id=request_id,
            version=version,
            created_at=now,
        )
        self.database.notify(conn, CHANGES_CHANNEL, json.dumps([org, version]))

    def write_audit(
        self,
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
        """Add an audit entry inside the caller's transaction."""
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

    def get_active(
        self, organization_id: str, target_type: str, target_id: str
    ) -> KillSwitch | None:
        target_type, target_id = validate_target(target_type, target_id)
        with self.database.read() as conn:
            row = conn.execute(
                select(kill_switches).where(
                    kill_switches.c.organization_id == organization_id,
                    kill_switches.c.target_type == target_type,
                    kill_switches.c.target_id == target_id,
                    kill_switches.c.is_active,
                )
            ).first()
        return None if row is None else _kill_switch(row)

    def list_active(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[KillSwitch], int]:
        where = and_(kill_switches.c.organization_id == organization_id, kill_switches.c.is_active)
        with self.database.read() as conn:
            rows = conn.execute(
                select(kill_switches)
                .where(where)
                .order_by(kill_switches.c.killed_at.desc(), kill_switches.c.id)
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(kill_switches).where(where)
            ).scalar_one()
        return [_kill_switch(r) for r in rows], int(count)

    def snapshot(self, organization_id: str) -> Snapshot:
        with self.database.read() as conn:
            version = self._version(conn, organization_id)
            rows = conn.execute(
                select(kill_switches).where(
                    kill_switches.c.organization_id == organization_id, kill_switches.c.is_active
                )
            ).all()
        return Snapshot(
            organization_id=organization_id, version=version, active=[_kill_switch(r) for r in rows]
        )

    @staticmethod
    def _version(conn: Connection, org: str) -> int:
        value = conn.execute(
            select(org_versions.c.version).where(org_versions.c.organization_id == org)
        ).scalar()
        return int(value or 0)

    def versions(self, organization_ids: Iterable[str] | None) -> dict[str, int]:
        """The current version of the given organizations (0 if unchanged), or of all."""
        query = select(org_versions.c.organization_id, org_versions.c.version)
        if organization_ids is not None:
            orgs = list(organization_ids)
            if not orgs:
                return {}
            query = query.where(org_versions.c.organization_id.in_(orgs))
        with self.database.read() as conn:
            found = {r.organization_id: int(r.version) for r in conn.execute(query)}
        if organization_ids is None:
            return found
        return {org: found.get(org, 0) for org in orgs}

    def changes_since(
        self, organization_id: str, version: int, *, limit: int = 1000
    ) -> list[KillChange] | None:
        # The whole change log is kept, so this never returns None.
        with self.database.read() as conn:
            rows = conn.execute(
                select(kill_changes.c.version, kill_changes.c.kind, kill_switches)
                .join(kill_switches, kill_switches.c.id == kill_changes.c.kill_switch_id)
                .where(
                    kill_changes.c.organization_id == organization_id,
                    kill_changes.c.version > version,
                )
                .order_by(kill_changes.c.version)
                .limit(limit)
            ).all()
        return [_change(r) for r in rows]

    # -- interventions -------------------------------------------------------------------------

    def add_interventions(self, organization_id: str, items: Iterable[Intervention]) -> int:
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
                _upsert(conn, interventions)
                .on_conflict_do_nothing(
                    index_elements=[interventions.c.organization_id, interventions.c.id]
                )
                .returning(interventions.c.id)
            )
            added = conn.execute(stmt, values).all()
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
        where = _filters(
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
        where = _filters(
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

    # -- audit ---------------------------------------------------------------------------------

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
        where = _filters(
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

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, organization_id: str, key: str, state_json: str) -> None:
        """Store (replace) the checkpoint ``key``; ``state_json`` is already validated."""
        with self.database.write() as conn:
            stmt = _upsert(conn, checkpoints).values(
                organization_id=organization_id, key=key, state_json=state_json, updated_at=utcnow()
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[checkpoints.c.organization_id, checkpoints.c.key],
                    set_={
                        "state_json": stmt.excluded.state_json,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )

    def get_checkpoint(self, organization_id: str, key: str) -> tuple[str, datetime] | None:
        """The checkpoint stored under ``key`` and when it was stored, or None."""
        with self.database.read() as conn:
            row = conn.execute(
                select(checkpoints.c.state_json, checkpoints.c.updated_at).where(
                    checkpoints.c.organization_id == organization_id, checkpoints.c.key == key
                )
            ).first()
        return None if row is None else (str(row.state_json), row.updated_at)

    def load_checkpoint(self, organization_id: str, key: str) -> str | None:
        """The checkpoint stored under ``key``, or None."""
        with self.database.read() as conn:
            value = conn.execute(
                select(checkpoints.c.state_json).where(
                    checkpoints.c.organization_id == organization_id, checkpoints.c.key == key
                )
            ).scalar()
        return None if value is None else str(value)

    # -- fleet: heartbeats, acknowledgements, usage --------------------------------------------

    def record_heartbeat(
        self,
        organization_id: str,
        report: HeartbeatReport,
        *,
        now: datetime,
        acked_at: datetime,
        binding: AgentBinding | None = None,
    ) -> tuple[InstanceRow, list[NewAck]]:
        """Store a heartbeat: the instance's state, its usage since the last one, its acks.

        Raises :class:`VersionAheadError` (and writes nothing) if it claims a version the
        organization has not reached, and :class:`AgentNotAllowedError` (writing nothing) if
        the instance belongs to an agent ``binding`` does not allow.
        """
        with self.database.write() as conn:
            self._check_version(conn, organization_id, report.version)
            previous = self._lock_instance(conn, organization_id, report.instance_id, now, acked_at)
            if binding is not None:
                _check_owner(binding, previous)
            scope = Scope(
                report.agent_id or previous.agent_id,
                report.run_id or previous.run_id,
                report.mission_id or previous.mission_id,
            )
            values = {
                "agent_id": scope.agent_id,
                "run_id": scope.run_id,
                "mission_id": scope.mission_id,
                "interval_s": report.interval,
                "executed": report.executed,
                "refused": report.refused,
                "failed": report.failed,
                "cost_usd": report.cost_usd,
                "version": max(previous.version, report.version),
                "checkpoint": report.checkpoint or previous.checkpoint,
                "status": report.status,
                "error": report.error,
                "last_seen": now,
            }
            self._update_instance(conn, organization_id, report.instance_id, values)
            delta = (
                max(0, report.executed - previous.executed),
                max(0, report.refused - previous.refused),
                max(0, report.failed - previous.failed),
                max(0.0, report.cost_usd - previous.cost_usd),
            )
            if scope.agent_id and any(delta):
                self._add_usage(conn, organization_id, scope.agent_id, now, delta)
            row = previous.updated(values)
            acks = self._record_acks(
                conn, organization_id, row, previous.version, report.version, acked_at
            )
        return row, acks

    def record_ack(
        self,
        organization_id: str,
        instance_id: str,
        version: int,
        scope: Scope,
        *,
        now: datetime,
        acked_at: datetime,
    ) -> tuple[InstanceRow, list[NewAck]]:
        """Store that an instance applied every change up to ``version``; return new acks."""
        (result,) = self.record_acks(
            [AckReport(organization_id, instance_id, version, scope, now, acked_at)]
        )
        if isinstance(result, Exception):
            raise result
        return result

    def record_acks(
        self, reports: Sequence[AckReport]
    ) -> list[tuple[InstanceRow, list[NewAck]] | VersionAheadError | AgentNotAllowedError]:
        """Store many acknowledgements in one transaction (a group commit).

        Per report, in order: the instance's row and the kills it newly acknowledged, or the
        :class:`VersionAheadError` of a report claiming a version its organization has not
        reached, or the :class:`AgentNotAllowedError` of one whose key does not speak for the
        instance's agent (nothing of those is written). A few statements per organization,
        whatever the number of reports; instances are locked in (organization, instance)
        order, so concurrent batches (other replicas) cannot deadlock.
        """
        results: dict[
            int, tuple[InstanceRow, list[NewAck]] | VersionAheadError | AgentNotAllowedError
        ] = {}
        by_org: dict[str, list[int]] = {}
        for i, report in enumerate(reports):
            by_org.setdefault(report.organization_id, []).append(i)
        with self.database.write() as conn:
            for org in sorted(by_org):
                reached = self._version(conn, org)
                accepted: list[int] = []
                for i in by_org[org]:
                    if reports[i].version > reached:
                        results[i] = _version_ahead(reports[i].version, reached)
                    else:
                        accepted.append(i)
                if accepted:
                    recorded = self._record_org_acks(conn, org, [reports[i] for i in accepted])
                    results.update(zip(accepted, recorded, strict=True))
        return [results[i] for i in range(len(reports))]

    def _record_org_acks(
        self, conn: Connection, org: str, reports: list[AckReport]
    ) -> list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError]:
        """:meth:`record_acks` for the valid reports of one organization, in order."""
        first: dict[str, AckReport] = {}
        for report in reports:
            first.setdefault(report.instance_id, report)
        rows = self._lock_instances(conn, org, first)
        kills = self._kills_between(
            conn, org, min(r.version for r in rows.values()), max(r.version for r in reports)
        )
        changed: dict[str, dict[str, Any]] = {}
        proposed: list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError] = []
        for report in reports:
            previous = rows[report.instance_id]
            if report.binding is not None:
                try:
                    _check_owner(report.binding, previous)
                except AgentNotAllowedError as refused:
                    proposed.append(refused)
                    continue
            values = {
                "agent_id": report.scope.agent_id or previous.agent_id,
                "run_id": report.scope.run_id or previous.run_id,
                "mission_id": report.scope.mission_id or previous.mission_id,
                "version": max(previous.version, report.version),
                "last_seen": report.now,
            }
            row = rows[report.instance_id] = previous.updated(values)
            changed.setdefault(report.instance_id, {}).update(values)
            new = _new_acks(kills, row, previous.version, report.version, report.received_at)
            proposed.append((row, new))
        if changed:
            conn.execute(
                update(instances)
                .where(
                    instances.c.organization_id == org,
                    instances.c.instance_id == bindparam("b_instance_id"),
                )
                .values({column: bindparam(f"b_{column}") for column in _ACK_COLUMNS}),
                [
                    {"b_instance_id": instance_id, **{f"b_{c}": values[c] for c in _ACK_COLUMNS}}
                    for instance_id, values in changed.items()
                ],
            )
        created = self._insert_acks(
            conn,
            [
                (org, result[0].instance_id, ack, report.received_at)
                for report, result in zip(reports, proposed, strict=True)
                if not isinstance(result, AgentNotAllowedError)
                for ack in result[1]
            ],
        )
        return [
            result
            if isinstance(result, AgentNotAllowedError)
            else (
                result[0],
                [
                    ack
                    for ack in result[1]
                    if (org, result[0].instance_id, ack.kill_switch_id) in created
                ],
            )
            for result in proposed
        ]

    def prune(
        self, before: datetime, *, interventions_too: bool = False, dry_run: bool = False
    ) -> dict[str, int]:
        """Delete fleet rows last touched before ``before``, in every organization; the counts.

        Instances not seen since (with their acknowledgements) and usage slices; with
        ``interventions_too`` also interventions received before it; and console sign-outs of
        sessions that have expired anyway. Kill switches, the change log, the audit log and
        checkpoints are kept. One transaction: all or nothing; ``dry_run`` counts and deletes
        nothing.
        """
        acks_of_gone = (
            select(instances.c.instance_id)
            .where(
                instances.c.organization_id == kill_acks.c.organization_id,
                instances.c.instance_id == kill_acks.c.instance_id,
                instances.c.last_seen < before,
            )
            .exists()
        )
        targets = [
            ("acknowledgements", kill_acks, acks_of_gone),
            ("instances", instances, instances.c.last_seen < before),
            ("usage", usage, usage.c.bucket < before),
        ]
        if interventions_too:
            targets.append(("interventions", interventions, interventions.c.received_at < before))
        expired = console_sign_outs.c.expires_at < utcnow()
        targets.append(("expired console sign-outs", console_sign_outs, expired))
        counts: dict[str, int] = {}
        with self.database.write() as conn:
            for name, table, where in targets:
                counts[name] = int(
                    conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
                )
                if not dry_run and counts[name]:
                    conn.execute(delete(table).where(where))
        return counts

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
                _upsert(conn, instances).on_conflict_do_nothing(
                    index_elements=[instances.c.organization_id, instances.c.instance_id]
                ),
                [
                    _new_instance(org, instance_id, first_seen, now, present[org, instance_id])
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

    def _lock_instances(
        self, conn: Connection, org: str, first: Mapping[str, AckReport]
    ) -> dict[str, InstanceRow]:
        """:meth:`_lock_instance` for several instances, each created from its first report."""
        conn.execute(
            _upsert(conn, instances).on_conflict_do_nothing(
                index_elements=[instances.c.organization_id, instances.c.instance_id]
            ),
            [
                _new_instance(org, instance_id, report.received_at, report.now)
                for instance_id, report in sorted(first.items())
            ],
        )
        found = conn.execute(
            select(instances)
            .where(instances.c.organization_id == org, instances.c.instance_id.in_(sorted(first)))
            .order_by(instances.c.instance_id)
            .with_for_update()
        ).all()
        return {row.instance_id: InstanceRow.of(row) for row in found}

    def _check_version(self, conn: Connection, org: str, version: int) -> None:
        current = self._version(conn, org)
        if version > current:
            raise _version_ahead(version, current)

    def _lock_instance(
        self, conn: Connection, org: str, instance_id: str, now: datetime, first_seen: datetime
    ) -> InstanceRow:
        """The instance's row, created if new, locked until commit (PostgreSQL).

        ``now`` is the fleet's clock (health); ``first_seen`` real time (ack latencies).
        """
        conn.execute(
            _upsert(conn, instances)
            .values(**_new_instance(org, instance_id, first_seen, now))
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

    @staticmethod
    def _update_instance(
        conn: Connection, org: str, instance_id: str, values: dict[str, Any]
    ) -> None:
        conn.execute(
            update(instances)
            .where(instances.c.organization_id == org, instances.c.instance_id == instance_id)
            .values(**values)
        )

    @staticmethod
    def _add_usage(
        conn: Connection,
        org: str,
        agent_id: str,
        now: datetime,
        delta: tuple[int, int, int, float],
    ) -> None:
        executed, refused, failed, cost = delta
        stmt = _upsert(conn, usage).values(
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

    def _record_acks(
        self,
        conn: Connection,
        org: str,
        instance: InstanceRow,
        before: int,
        version: int,
        acked_at: datetime,
    ) -> list[NewAck]:
        """Acknowledge the active kills of versions ``before < v <= version`` that apply."""
        if version <= before:
            return []
        new = _new_acks(
            self._kills_between(conn, org, before, version), instance, before, version, acked_at
        )
        created = self._insert_acks(
            conn, [(org, instance.instance_id, ack, acked_at) for ack in new]
        )
        return [ack for ack in new if (org, instance.instance_id, ack.kill_switch_id) in created]

    @staticmethod
    def _kills_between(conn: Connection, org: str, before: int, version: int) -> list[Any]:
        """The active kills of versions ``before < v <= version``."""
        if version <= before:
            return []
        kc, ks = kill_changes.c, kill_switches.c
        return list(
            conn.execute(
                select(kc.version, ks.id, ks.target_type, ks.target_id, ks.killed_at)
                .join(kill_switches, ks.id == kc.kill_switch_id)
                .where(
                    kc.organization_id == org,
                    kc.kind == "kill",
                    kc.version > before,
                    kc.version <= version,
                    ks.is_active,
                )
            ).all()
        )

    @staticmethod
    def _insert_acks(
        conn: Connection, acks: list[tuple[str, str, NewAck, datetime]]
    ) -> set[tuple[str, str, str]]:
        """Insert (organization, instance, ack, when) rows; the (org, instance, kill) created."""
        if not acks:
            return set()
        t = kill_acks.c
        inserted = conn.execute(
            _upsert(conn, kill_acks)
            .on_conflict_do_nothing(
                index_elements=[t.organization_id, t.kill_switch_id, t.instance_id]
            )
            .returning(t.organization_id, t.instance_id, t.kill_switch_id),
            [
                {
                    "organization_id": org,
                    "kill_switch_id": ack.kill_switch_id,
                    "instance_id": instance_id,
                    "version": ack.version,
                    "acknowledged_at": when,
                    "latency_ms": ack.latency_ms,
                }
                for org, instance_id, ack, when in acks
            ],
        ).all()
        return {(r.organization_id, r.instance_id, r.kill_switch_id) for r in inserted}

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
        where = _filters(t.organization_id == organization_id, {t.agent_id: agent_id})
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
        if target_type != "tool":
            column = getattr(t, f"{target_type}_id")
            where = and_(where, or_(column.is_(None), column == target_id))
        with self.database.read() as conn:
            rows = conn.execute(select(instances).where(where).order_by(t.instance_id)).all()
        return [InstanceRow.of(r) for r in rows]

    def kill_acks(
        self, organization_id: str, kill_switch_id: str
    ) -> tuple[int, dict[str, tuple[datetime, float | None]]]:
        """A kill's version and its acknowledgements: instance id -> (when, latency ms)."""
        with self.database.read() as conn:
            version = conn.execute(
                select(kill_changes.c.version).where(
                    kill_changes.c.organization_id == organization_id,
                    kill_changes.c.kill_switch_id == kill_switch_id,
                    kill_changes.c.kind == "kill",
                )
            ).scalar()
            rows = conn.execute(
                select(
                    kill_acks.c.instance_id, kill_acks.c.acknowledged_at, kill_acks.c.latency_ms
                ).where(
                    kill_acks.c.organization_id == organization_id,
                    kill_acks.c.kill_switch_id == kill_switch_id,
                )
            ).all()
        acks = {r.instance_id: (r.acknowledged_at, r.latency_ms) for r in rows}
        return int(version or 0), acks

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
        times = [_aware(t) for t in (killed, observed) if t is not None]
        return max(times) if times else None

    # -- change listeners ----------------------------------------------------------------------

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` for every change this process learns of, in version order."""
        return self.feed.subscribe(listener)


def _upsert(conn: Connection, table: Any = org_versions) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _new_instance(
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
        "cost_usd": 0.0,
        "version": 0,
        "status": "running",
        "first_seen": first_seen,
        "last_seen": last_seen,
    }


def _filters(base: Any, equal: Mapping[Any, object]) -> Any:
    clauses = [base] + [column == value for column, value in equal.items() if value is not None]
    return and_(*clauses)


def _kill_switch(row: Row[Any]) -> KillSwitch:
    m = row._mapping
    return KillSwitch(
        id=m["id"],
        target_type=m["target_type"],
        target_id=m["target_id"],
        reason=m["reason"],
        is_active=m["is_active"],
        killed_by=m["killed_by"],
        killed_at=m["killed_at"],
        revived_by=m["revived_by"],
        revived_at=m["revived_at"],
        organization_id=m["organization_id"],
    )


def _change(row: Row[Any]) -> KillChange:
    ks = _kill_switch(row)
    if row.kind == "kill":  # the record as it was when killed, not as it is now
        ks = ks.model_copy(update={"is_active": True, "revived_by": None, "revived_at": None})
    return KillChange(version=int(row.version), kind=row.kind, kill_switch=ks)


def _counts_row(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "target_type": m["target_type"],
        "target_id": m["target_id"],
        "type": m["type"],
        "count": int(m["count"]),
        "last_occurred_at": m["last_occurred_at"],
    }


# -- fleet records -------------------------------------------------------------------------------

USAGE_SLICE = 10  # seconds per usage row
# The error of an instance whose change stream ended without a clean exit (and not back since).
STREAM_ENDED = "its change stream ended without a clean exit"


def usage_bucket(when: datetime) -> datetime:
    """The start of the 10-second usage slice holding ``when``."""
    when = _aware(when)
    return when.replace(second=when.second - when.second % USAGE_SLICE, microsecond=0)


def _aware(when: datetime) -> datetime:
    """SQLite's aggregate functions return naive UTC datetimes (or strings): make them aware."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


class VersionAheadError(AgentGuardError):
    """An instance claims a kill-state version its organization has not reached."""


def _check_owner(binding: AgentBinding, instance: InstanceRow) -> None:
    """Refuse a report about an instance of an agent the reporting key does not speak for."""
    if instance.agent_id is not None and not binding.allows(instance.agent_id):
        raise AgentNotAllowedError(
            "instance_id",
            f"instance_id: instance {instance.instance_id!r} belongs to agent "
            f"{instance.agent_id!r}; this key speaks for {binding.speaks_for()}",
        )


def _version_ahead(version: int, current: int) -> VersionAheadError:
    return VersionAheadError(
        f"version {version} is ahead of the organization's kill-state version {current}"
    )


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
    cost_usd: float
    version: int
    checkpoint: str | None
    status: str
    error: str | None
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, row: Row[Any]) -> InstanceRow:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})

    def updated(self, values: Mapping[str, Any]) -> InstanceRow:
        return replace(self, **{k: v for k, v in values.items() if k in _INSTANCE_FIELDS})

    def may_run(self, target_type: str, target_id: str) -> bool:
        """Whether a kill of the target can apply to calls of this instance.

        A tool kill applies to every instance; an agent, run or mission kill to each
        instance that does not report a different id of that kind.
        """
        if target_type == "tool":
            return True
        own = getattr(self, f"{target_type}_id")
        return own is None or own == target_id


_INSTANCE_FIELDS = frozenset(f.name for f in fields(InstanceRow))
# What an acknowledgement changes in an instance's row.
_ACK_COLUMNS = ("agent_id", "run_id", "mission_id", "version", "last_seen")


@dataclass(frozen=True)
class NewAck:
    """A kill an instance has newly acknowledged."""

    kill_switch_id: str
    target_type: str
    version: int
    latency_ms: float | None


@dataclass(frozen=True)
class AckReport:
    """An instance applied every change of its organization up to ``version``.

    ``now`` is the fleet's clock when the report arrived (health), ``received_at`` real time
    (ack latencies).
    """

    organization_id: str
    instance_id: str
    version: int
    scope: Scope
    now: datetime
    received_at: datetime
    binding: AgentBinding | None = None  # the reporting key's agents; None: any


def _new_acks(
    kills: Sequence[Any], instance: InstanceRow, before: int, version: int, acked_at: datetime
) -> list[NewAck]:
    """Of ``kills``, those of versions ``before < v <= version`` that apply to the instance."""
    new: list[NewAck] = []
    for kill in kills:
        if not before < kill.version <= version:
            continue
        if not instance.may_run(kill.target_type, kill.target_id):
            continue
        latency = None
        if instance.first_seen <= kill.killed_at:  # it was there when the kill committed
            latency = max(0.0, (acked_at - kill.killed_at).total_seconds() * 1000)
        new.append(NewAck(kill.id, kill.target_type, int(kill.version), latency))
    return new


@dataclass(frozen=True)
class Usage:
    """Work reported by heartbeats over some time."""

    executed: int = 0
    refused: int = 0
    failed: int = 0
    cost_usd: float = 0.0
