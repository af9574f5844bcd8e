"""Kill state: kill switches, each organization's version and its change log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ...errors import AgentGuardError, AlreadyKilledError, InvalidInputError, NotKilledError
from ...records import KillChange, KillSwitch, Snapshot, new_id, utcnow
from ...store import ChangeListener
from ...targets import (
    EXPIRY_ACTOR,
    check_organization_target,
    validate_reason,
    validate_target,
)
from ..webhooks.events import change_events
from .audit import add_note, write_audit
from .feed import CHANGES_CHANNEL, ChangeFeed
from .rows import Rows, upsert
from .tables import kill_changes, kill_switches, org_versions
from .webhooks import Outbox, queue_events

# A lost race for the one active kill of a target surfaces as an IntegrityError; the retry
# then finds the winner's record (or, if it was revived meanwhile, kills afresh).
_KILL_ATTEMPTS = 5
_WARM_UP = "agentguard-warm-up"  # the organization, target and actor of the rolled-back warm-up
RUN_END = "run_end"  # a kill's ``until``: it ends when its run does


class _RolledBack(Exception):
    """Raised to roll a transaction back on purpose."""


class VersionAheadError(AgentGuardError):
    """An instance claims a kill-state version its organization has not reached."""

    def __init__(self, version: int, current: int) -> None:
        super().__init__(
            f"version {version} is ahead of the organization's kill-state version {current}"
        )


def version_of(conn: Connection, organization_id: str) -> int:
    """The organization's kill-state version (0 before its first change)."""
    value = conn.execute(
        select(org_versions.c.version).where(org_versions.c.organization_id == organization_id)
    ).scalar()
    return int(value or 0)


def check_version(conn: Connection, organization_id: str, version: int) -> None:
    """Raise :class:`VersionAheadError` if the organization has not reached ``version``."""
    current = version_of(conn, organization_id)
    if version > current:
        raise VersionAheadError(version, current)


class KillStateRows(Rows):
    """Kill and revive targets; read active kills, snapshots and changes.

    ``kill``/``revive`` commit the record, the organization's next version, a change-log row,
    an audit entry and the webhook deliveries of the change in one transaction, then hand the
    change to :attr:`feed`.
    """

    feed: ChangeFeed  # set by SQLStore, which composes the rows with the feed
    outbox: Outbox  # set by SQLStore: wakes this process's webhook sender

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
        rule: str | None = None,
        expires_at: datetime | None = None,
        until: str | None = None,
    ) -> KillChange:
        """Kill a target; ``audit_note`` is added to the audit entry's detail (after the reason).

        ``rule`` names the server rule (or in-process guard rule) that tripped, for the
        ``rule.tripped`` webhook event. ``expires_at``: a time-limited kill, which
        :meth:`expire_due` revives once it has passed. ``until="run_end"`` (a run only) ends
        the kill when the run does (:meth:`end_with_run`).
        """
        target_type, target_id = validate_target(target_type, target_id)
        reason = validate_reason(reason)
        check_organization_target(organization_id, target_type, target_id)
        for _ in range(_KILL_ATTEMPTS):
            try:
                with self.database.write() as conn:
                    change = self._kill_in(
                        conn,
                        organization_id,
                        target_type,
                        target_id,
                        reason,
                        actor,
                        request_id,
                        expires_at,
                    )
                    if until is not None:
                        _mark_until(conn, change.kill_switch.id, target_type, until)
                    if audit_note:
                        add_note(conn, organization_id, change.version, audit_note)
                    queued = queue_events(conn, organization_id, change_events(change, rule=rule))
            except IntegrityError:
                existing = self.get_active(organization_id, target_type, target_id)
                if existing is not None:
                    raise AlreadyKilledError(existing) from None
                continue  # the winner was revived in between: try again
            self.feed.publish(organization_id, change)
            if queued:
                self.outbox.queued()
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
        expires_at: datetime | None = None,
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
            expires_at=expires_at,
        )
        # The version row is locked first (PostgreSQL: row lock until commit), so writers of
        # one organization commit in version order.
        version = _next_version(conn, org)
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
        reason: str | None = None,
    ) -> KillChange:
        """Revive a target's active kill; ``reason`` (why) is the audit entry's detail."""
        target_type, target_id = validate_target(target_type, target_id, existing=True)
        reason = validate_reason(reason)
        with self.database.write() as conn:
            change = self._revive_in(
                conn, organization_id, target_type, target_id, actor, request_id, detail=reason
            )
            queued = queue_events(conn, organization_id, change_events(change))
        self.feed.publish(organization_id, change)
        if queued:
            self.outbox.queued()
        return change

    def _revive_in(
        self,
        conn: Connection,
        org: str,
        target_type: str,
        target_id: str,
        actor: str,
        request_id: str | None,
        kill_switch_id: str | None = None,
        detail: str | None = None,
        until: str | None = None,
    ) -> KillChange:
        now = utcnow()
        version = _next_version(conn, org)
        which = [] if kill_switch_id is None else [kill_switches.c.id == kill_switch_id]
        only = () if until is None else (kill_switches.c.until == until,)
        row = conn.execute(
            update(kill_switches)
            .where(
                kill_switches.c.organization_id == org,
                kill_switches.c.target_type == target_type,
                kill_switches.c.target_id == target_id,
                kill_switches.c.is_active,
                *which,
                *only,
            )
            .values(is_active=False, revived_by=actor, revived_at=now)
            .returning(*kill_switches.c)
        ).first()
        if row is None:
            raise NotKilledError(target_type, target_id)  # rolls the version back too
        ks = _kill_switch(row)
        self._log(conn, org, version, "revive", ks, actor, request_id, now, detail)
        return KillChange(version=version, kind="revive", kill_switch=ks)

    def expire_due(self, now: datetime | None = None, *, limit: int = 100) -> list[KillChange]:
        """Revive, as ``expiry``, the active kills whose ``expires_at`` has passed (at most
        ``limit``, soonest first); return the changes.

        Every replica may call it: each kill is revived by the one transaction whose
        conditional update still finds it active (the others roll back), so once.
        """
        now = now or utcnow()
        ks = kill_switches.c
        with self.database.read() as conn:
            due = conn.execute(
                select(ks.organization_id, ks.id, ks.target_type, ks.target_id, ks.expires_at)
                .where(ks.is_active, ks.expires_at.is_not(None), ks.expires_at <= now)
                .order_by(ks.expires_at)
                .limit(limit)
            ).all()
        changes = []
        for row in due:
            try:
                with self.database.write() as conn:
                    change = self._revive_in(
                        conn,
                        row.organization_id,
                        row.target_type,
                        row.target_id,
                        EXPIRY_ACTOR,
                        None,
                        kill_switch_id=row.id,
                        detail=f"expired at {row.expires_at.isoformat()}",
                    )
                    queued = queue_events(conn, row.organization_id, change_events(change))
            except NotKilledError:
                continue  # revived meanwhile, by an operator or by another replica's expiry
            self.feed.publish(row.organization_id, change)
            if queued:
                self.outbox.queued()
            changes.append(change)
        return changes

    def end_with_run(
        self, organization_id: str, run_id: str, *, actor: str, note: str
    ) -> KillChange | None:
        """End the run's kill if it was made ``until`` the run ends; ``None`` if it has none.

        A revive by ``actor`` in every respect (version, change log, audit entry with ``note``,
        webhooks); a kill of the run without ``until`` stays.
        """
        _, run_id = validate_target("run", run_id, existing=True)
        try:
            with self.database.write() as conn:
                change = self._revive_in(
                    conn, organization_id, "run", run_id, actor, None, until=RUN_END
                )
                add_note(conn, organization_id, change.version, note)
                queued = queue_events(conn, organization_id, change_events(change))
        except NotKilledError:
            return None
        self.feed.publish(organization_id, change)
        if queued:
            self.outbox.queued()
        return change

    def kills_active_before(self, before: datetime) -> int:
        """How many kill switches, in every organization, have been active since before then."""
        ks = kill_switches.c
        with self.database.read() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(kill_switches)
                .where(ks.is_active, ks.killed_at < before)
            ).scalar_one()
        return int(count)

    def warm_up(self) -> None:
        """Compile the statements of a kill and a revive (both rolled back, nothing is written),
        so the first kill after a start is as fast as the next ones."""
        try:
            with self.database.write() as conn:
                kill = self._kill_in(conn, _WARM_UP, "agent", _WARM_UP, None, _WARM_UP, None)
                queue_events(conn, _WARM_UP, change_events(kill))
                revive = self._revive_in(conn, _WARM_UP, "agent", _WARM_UP, _WARM_UP, None)
                queue_events(conn, _WARM_UP, change_events(revive))
                raise _RolledBack
        except _RolledBack:
            pass

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
        detail: str | None = None,
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
        write_audit(
            conn,
            org,
            action=kind,
            actor=actor,
            target_type=ks.target_type,
            target_id=ks.target_id,
            detail=ks.reason if kind == "kill" else detail,
            request_id=request_id,
            version=version,
            created_at=now,
        )
        self.database.notify(conn, CHANGES_CHANNEL, json.dumps([org, version]))

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

    def active_kill_counts(self, organization_id: str) -> dict[str, int]:
        """How many active kill switches the organization has, by target type."""
        ks = kill_switches.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(ks.target_type, func.count())
                .where(ks.organization_id == organization_id, ks.is_active)
                .group_by(ks.target_type)
            ).all()
        return {target_type: int(n) for target_type, n in rows}

    def snapshot(self, organization_id: str) -> Snapshot:
        with self.database.read() as conn:
            version = version_of(conn, organization_id)
            rows = conn.execute(
                select(kill_switches).where(
                    kill_switches.c.organization_id == organization_id, kill_switches.c.is_active
                )
            ).all()
        return Snapshot(
            organization_id=organization_id, version=version, active=[_kill_switch(r) for r in rows]
        )

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
        """The changes after ``version`` in order (at most ``limit``), or ``None`` when the log
        no longer reaches back that far (``db prune --change-log`` trimmed it)."""
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
            behind = not rows and version < version_of(conn, organization_id)
        if behind or (rows and int(rows[0].version) != version + 1):
            return None  # versions are consecutive: the first one missing was pruned
        return [_change(r) for r in rows]

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` for every change this process learns of, in version order."""
        return self.feed.subscribe(listener)


def _mark_until(conn: Connection, kill_switch_id: str, target_type: str, until: str) -> None:
    if until != RUN_END or target_type != "run":
        raise InvalidInputError(
            "until", f"{until!r}: only kills of a run take until, and only 'run_end'"
        )
    conn.execute(
        update(kill_switches).where(kill_switches.c.id == kill_switch_id).values(until=until)
    )


def _next_version(conn: Connection, org: str) -> int:
    stmt = (
        upsert(conn, org_versions)
        .values(organization_id=org, version=1)
        .on_conflict_do_update(
            index_elements=[org_versions.c.organization_id],
            set_={"version": org_versions.c.version + 1},
        )
        .returning(org_versions.c.version)
    )
    return int(conn.execute(stmt).scalar_one())


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
        expires_at=m["expires_at"],
    )


def _change(row: Row[Any]) -> KillChange:
    ks = _kill_switch(row)
    if row.kind == "kill":  # the record as it was when killed, not as it is now
        ks = ks.model_copy(update={"is_active": True, "revived_by": None, "revived_at": None})
    return KillChange(version=int(row.version), kind=row.kind, kill_switch=ks)
