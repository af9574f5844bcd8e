"""Governed revive: revive requests, their approvals, and the revive the last approval makes.

A person is the credential's user (``Principal.user_id``): two keys of one user are one person.
Records name the actor (the user and the key), as kills do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ...errors import AgentGuardError, NotKilledError
from ...protocol import ReviveApproval, ReviveRequest
from ...records import KillChange, new_id, utcnow
from ...targets import validate_reason, validate_target
from ..webhooks.events import change_events
from .audit import write_audit
from .killstate import KillStateRows
from .rows import aware
from .tables import kill_switches, revive_approvals, revive_requests
from .webhooks import queue_events

# The audit actions of a request's life.
REQUESTED, APPROVED, REJECTED, EXPIRED = (
    "revive.request",
    "revive.approve",
    "revive.reject",
    "revive.expire",
)


class ReviveRequestNotFoundError(AgentGuardError):
    """No revive request of that id in the caller's organization (HTTP 404)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no revive request {request_id!r}")


class ReviveRequestClosedError(AgentGuardError):
    """The request is no longer pending (HTTP 409)."""

    def __init__(self, request: ReviveRequest) -> None:
        self.request = request
        super().__init__(f"revive request {request.id} is {request.status}, no longer pending")


class ReviveRequestExistsError(AgentGuardError):
    """The target has a pending revive request already (HTTP 409)."""

    def __init__(self, request: ReviveRequest) -> None:
        self.request = request
        super().__init__(
            f"{request.target_type} {request.target_id!r} has a pending revive request "
            f"{request.id} by {request.requested_by}: approve it, or reject it and ask again"
        )


class ApprovalRefusedError(AgentGuardError):
    """This person may not approve this request (HTTP 403)."""


class ReviveRequestRows(KillStateRows):
    """Request, approve, reject and expire revive requests."""

    def request_revive(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        actor: str,
        person: str,
        people: int,
        ttl: timedelta,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> ReviveRequest:
        """Ask for the revive of the target's active kill; ``people`` must agree (``person``,
        the requester, is the first). :class:`NotKilledError` if it is not killed."""
        target_type, target_id = validate_target(target_type, target_id, existing=True)
        reason = validate_reason(reason)
        now = utcnow()
        rid = new_id()
        try:
            with self.database.write() as conn:
                ks = conn.execute(
                    select(kill_switches.c.id).where(
                        kill_switches.c.organization_id == organization_id,
                        kill_switches.c.target_type == target_type,
                        kill_switches.c.target_id == target_id,
                        kill_switches.c.is_active,
                    )
                ).scalar()
                if ks is None:
                    raise NotKilledError(target_type, target_id)
                conn.execute(
                    insert(revive_requests).values(
                        id=rid,
                        organization_id=organization_id,
                        target_type=target_type,
                        target_id=target_id,
                        kill_switch_id=ks,
                        status="pending",
                        reason=reason,
                        people_required=people,
                        requested_by=actor,
                        requester=person,
                        requested_at=now,
                        expires_at=now + ttl,
                    )
                )
                row = self._lock(conn, organization_id, rid)
                _audit(conn, organization_id, REQUESTED, actor, row, reason, request_id, now)
                return self._request_in(conn, organization_id, rid)
        except IntegrityError:
            pending = self._pending_for(organization_id, target_type, target_id)
            if pending is None:
                raise  # not the one-pending rule: a bug, let it show
            raise ReviveRequestExistsError(pending) from None

    def approve_revive(
        self,
        organization_id: str,
        revive_request_id: str,
        *,
        actor: str,
        person: str,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> tuple[ReviveRequest, KillChange | None]:
        """Approve as ``person``; the approval that completes the request revives the kill in
        the same transaction (the change is returned, ``None`` otherwise)."""
        reason = validate_reason(reason)
        now = utcnow()
        change: KillChange | None = None
        queued = 0
        try:
            with self.database.write() as conn:
                row = self._lock(conn, organization_id, revive_request_id)
                closed = self._closed(conn, row, now, request_id)
                if closed is None:
                    change, queued = self._approve_in(
                        conn, row, actor, person, reason, request_id, now
                    )
                request = self._request_in(conn, organization_id, row.id)
        except NotKilledError:
            # The kill was revived otherwise (by its expiry, in-process) since the request.
            with self.database.write() as conn:
                row = self._lock(conn, organization_id, revive_request_id)
                _close(conn, row.id, "superseded", actor, now, "the kill was revived meanwhile")
                request = self._request_in(conn, organization_id, row.id)
            raise ReviveRequestClosedError(request) from None
        if closed is not None:
            raise ReviveRequestClosedError(closed)
        if change is not None:
            self.feed.publish(organization_id, change)
            if queued:
                self.outbox.queued()
            request = request.model_copy(update={"kill_switch": change.kill_switch})
        return request, change

    def _approve_in(
        self,
        conn: Connection,
        row: Row[Any],
        actor: str,
        person: str,
        reason: str | None,
        request_id: str | None,
        now: datetime,
    ) -> tuple[KillChange | None, int]:
        """Add the approval; revive if it is the last one needed (the change, and whether
        webhook deliveries were queued)."""
        org = row.organization_id
        if row.requester == person:
            raise ApprovalRefusedError(
                f"you requested revive {row.id} yourself (as {row.requested_by}): "
                "another person must approve it"
            )
        approvers = _approvals(conn, row.id)
        if any(a.approver == person for a in approvers):
            raise ApprovalRefusedError(
                f"you approved revive request {row.id} already; "
                f"it needs {row.people_required} different people"
            )
        conn.execute(
            insert(revive_approvals).values(
                request_id=row.id,
                approver=person,
                approved_by=actor,
                approved_at=now,
                reason=reason,
            )
        )
        _audit(conn, org, APPROVED, actor, row, reason, request_id, now)
        if len(approvers) + 2 < row.people_required:  # the requester, earlier approvers, this one
            return None, 0
        names = ", ".join([*(a.approved_by for a in approvers), actor])
        change = self._revive_in(
            conn,
            org,
            row.target_type,
            row.target_id,
            row.requested_by,
            request_id,
            kill_switch_id=row.kill_switch_id,
            detail=f"revive request {row.id}, approved by {names}",
        )
        _close(conn, row.id, "approved", actor, now, None)
        return change, queue_events(conn, org, change_events(change))

    def reject_revive(
        self,
        organization_id: str,
        revive_request_id: str,
        *,
        actor: str,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> ReviveRequest:
        """Reject a pending request (the requester may withdraw their own); the kill stays."""
        reason = validate_reason(reason)
        now = utcnow()
        with self.database.write() as conn:
            row = self._lock(conn, organization_id, revive_request_id)
            closed = self._closed(conn, row, now, request_id)
            if closed is None:
                _close(conn, row.id, "rejected", actor, now, reason)
                _audit(conn, organization_id, REJECTED, actor, row, reason, request_id, now)
                return self._request_in(conn, organization_id, row.id)
        raise ReviveRequestClosedError(closed)

    def get_revive_request(self, organization_id: str, revive_request_id: str) -> ReviveRequest:
        with self.database.read() as conn:
            return self._request_in(conn, organization_id, revive_request_id)

    def list_revive_requests(
        self,
        organization_id: str,
        *,
        status: str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[ReviveRequest], int]:
        """The organization's revive requests, newest first (``status``: only those)."""
        t = revive_requests.c
        where = [t.organization_id == organization_id]
        if status is not None:
            where.append(t.status == status)
        with self.database.read() as conn:
            rows = conn.execute(
                select(revive_requests)
                .where(*where)
                .order_by(t.requested_at.desc(), t.id)
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(revive_requests).where(*where)
            ).scalar_one()
            approvals = _approvals_of(conn, [r.id for r in rows])
        return [_request(r, approvals.get(r.id, [])) for r in rows], int(count)

    def expire_revive_requests(self, now: datetime | None = None, *, limit: int = 100) -> int:
        """Close, as ``expired``, the pending requests whose time has passed (each once, on
        whichever replica's conditional update finds it still pending); return how many."""
        now = now or utcnow()
        t = revive_requests.c
        with self.database.read() as conn:
            due = conn.execute(
                select(t.id, t.organization_id, t.target_type, t.target_id, t.expires_at)
                .where(t.status == "pending", t.expires_at <= now)
                .order_by(t.expires_at)
                .limit(limit)
            ).all()
        expired = 0
        for row in due:
            with self.database.write() as conn:
                if _expire(conn, row, now, None):
                    expired += 1
        return expired

    # -- within a transaction ------------------------------------------------------------------

    def _lock(self, conn: Connection, org: str, revive_request_id: str) -> Row[Any]:
        """The request's row, locked until the transaction ends (PostgreSQL; SQLite's write
        transaction holds the database)."""
        row = conn.execute(
            select(revive_requests)
            .where(
                revive_requests.c.organization_id == org,
                revive_requests.c.id == revive_request_id,
            )
            .with_for_update()
        ).first()
        if row is None:
            raise ReviveRequestNotFoundError(revive_request_id)
        return row

    def _closed(
        self, conn: Connection, row: Row[Any], now: datetime, request_id: str | None
    ) -> ReviveRequest | None:
        """``None`` if the request is pending; else the request as it is. One whose time has
        passed is expired here (the caller commits, then refuses)."""
        if row.status == "pending":
            if aware(row.expires_at) > now:
                return None
            _expire(conn, row, now, request_id)
        return self._request_in(conn, row.organization_id, row.id)

    def _request_in(self, conn: Connection, org: str, revive_request_id: str) -> ReviveRequest:
        row = conn.execute(
            select(revive_requests).where(
                revive_requests.c.organization_id == org,
                revive_requests.c.id == revive_request_id,
            )
        ).first()
        if row is None:
            raise ReviveRequestNotFoundError(revive_request_id)
        return _request(row, _approvals(conn, row.id))

    def _pending_for(self, org: str, target_type: str, target_id: str) -> ReviveRequest | None:
        t = revive_requests.c
        with self.database.read() as conn:
            rid = conn.execute(
                select(t.id).where(
                    t.organization_id == org,
                    t.target_type == target_type,
                    t.target_id == target_id,
                    t.status == "pending",
                )
            ).scalar()
            return None if rid is None else self._request_in(conn, org, rid)


def _audit(
    conn: Connection,
    org: str,
    action: str,
    actor: str,
    row: Row[Any],
    reason: str | None,
    request_id: str | None,
    now: datetime,
) -> None:
    write_audit(
        conn,
        org,
        action=action,
        actor=actor,
        target_type=row.target_type,
        target_id=row.target_id,
        detail=f"revive request {row.id}" + (f": {reason}" if reason else ""),
        request_id=request_id,
        created_at=now,
    )


def _close(
    conn: Connection,
    revive_request_id: str,
    status: str,
    actor: str,
    now: datetime,
    reason: str | None,
) -> bool:
    """Move a pending request to ``status``; False if it was not pending any more."""
    result = conn.execute(
        update(revive_requests)
        .where(revive_requests.c.id == revive_request_id, revive_requests.c.status == "pending")
        .values(status=status, closed_by=actor, closed_at=now, close_reason=reason)
    )
    return bool(result.rowcount)


def _expire(conn: Connection, row: Any, now: datetime, request_id: str | None) -> bool:
    if not _close(conn, row.id, "expired", "expiry", now, None):
        return False
    write_audit(
        conn,
        row.organization_id,
        action=EXPIRED,
        actor="expiry",
        target_type=row.target_type,
        target_id=row.target_id,
        detail=f"revive request {row.id}: unanswered by {aware(row.expires_at).isoformat()}",
        request_id=request_id,
        created_at=now,
    )
    return True


def _approvals(conn: Connection, revive_request_id: str) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(revive_approvals)
            .where(revive_approvals.c.request_id == revive_request_id)
            .order_by(revive_approvals.c.approved_at)
        ).all()
    )


def _approvals_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[Row[Any]]]:
    if not ids:
        return {}
    found: dict[str, list[Row[Any]]] = {}
    for r in conn.execute(
        select(revive_approvals)
        .where(revive_approvals.c.request_id.in_(list(ids)))
        .order_by(revive_approvals.c.approved_at)
    ):
        found.setdefault(r.request_id, []).append(r)
    return found


def _request(row: Row[Any], approvals: Sequence[Row[Any]]) -> ReviveRequest:
    m = row._mapping
    return ReviveRequest(
        id=m["id"],
        organization_id=m["organization_id"],
        target_type=m["target_type"],
        target_id=m["target_id"],
        kill_switch_id=m["kill_switch_id"],
        status=m["status"],
        reason=m["reason"],
        people_required=m["people_required"],
        requested_by=m["requested_by"],
        requested_at=m["requested_at"],
        expires_at=m["expires_at"],
        approvals=[
            ReviveApproval(approved_by=a.approved_by, approved_at=a.approved_at, reason=a.reason)
            for a in approvals
        ],
        closed_by=m["closed_by"],
        closed_at=m["closed_at"],
        close_reason=m["close_reason"],
    )
