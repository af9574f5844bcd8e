"""Webhooks and their outbox: endpoints, and one delivery row per event and endpoint.

A delivery is queued by :func:`queue_event` inside the transaction of its event (a kill, a
revive, a batch of interventions), so an event committed is an event that will be sent, even
if the process dies at once. Senders (:mod:`agentguard.server.webhooks.sender`) claim due
deliveries with a lease: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` lets replicas
claim side by side without ever taking the same row; on SQLite the claim is a write
transaction (``BEGIN IMMEDIATE``), which holds the file's single write lock, so processes on
one file claim one after the other. Deliveries of one webhook and subject go out in order.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, RowMapping, and_, delete, func, insert, or_, select, update

from ...errors import AgentGuardError
from ...records import utcnow
from ..webhooks.events import WebhookEvent, webhook_test_event
from .audit import write_audit
from .counters import WEBHOOK_DELIVERIES, WEBHOOK_FAILURES, WEBHOOK_GIVEN_UP, bump
from .rows import Rows
from .tables import webhook_deliveries, webhooks

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
ERROR_LENGTH = 500  # characters of an attempt's error kept in the log


class WebhookNotFoundError(AgentGuardError):
    """No such webhook in the organization (HTTP 404)."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"no webhook {webhook_id!r} in this organization")
        self.webhook_id = webhook_id


class Webhook(BaseModel):
    """A registered endpoint, without its secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    url: str
    format: str
    events: list[str]
    name: str | None = None
    created_by: str
    created_at: datetime


class WebhookDelivery(BaseModel):
    """One event for one webhook: queued, delivered, or given up; its attempts so far."""

    model_config = ConfigDict(frozen=True)

    webhook_id: str
    event_id: str
    event: str
    subject: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    response_status: int | None = None
    duration_ms: float | None = None
    error: str | None = None


class WebhookSummary(BaseModel):
    """A webhook with how its deliveries are going."""

    model_config = ConfigDict(frozen=True)

    webhook: Webhook
    pending: int
    last_delivery: WebhookDelivery | None


class Claim(BaseModel):
    """A delivery a sender has leased, with what it needs to send it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    delivery: WebhookDelivery
    payload: str
    url: str
    format: str
    secret: str | None
    organization_id: str


class Outbox:
    """Wakes this process's sender when one of its transactions queued deliveries (other
    processes' senders find them by polling)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def queued(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        """Until something is queued (or :meth:`queued` is called to stop a wait)."""
        self._event.wait(timeout)
        self._event.clear()


def new_webhook_id() -> str:
    return f"wh_{secrets.token_hex(12)}"


def queue_event(
    conn: Connection, organization_id: str, event: WebhookEvent, *, only: str | None = None
) -> int:
    """Queue ``event`` for every webhook of the organization that takes it (or for webhook
    ``only``, whatever it takes), inside the caller's transaction; how many were queued."""
    w = webhooks.c
    query = select(w.id, w.events).where(w.organization_id == organization_id)
    if only is not None:
        query = query.where(w.id == only)
    targets = [r.id for r in conn.execute(query) if only or event.type in json.loads(r.events)]
    if not targets:
        return 0
    now = utcnow()
    if event.quiet_for is not None:
        d = webhook_deliveries.c
        recent = conn.execute(
            select(d.webhook_id).where(
                d.organization_id == organization_id,
                d.event == event.type,
                d.subject == event.subject,
                d.created_at >= now - event.quiet_for,
                d.webhook_id.in_(targets),
            )
        ).scalars()
        quiet = set(recent)
        targets = [t for t in targets if t not in quiet]
        if not targets:
            return 0
    payload = event.envelope()
    conn.execute(
        insert(webhook_deliveries),
        [
            {
                "organization_id": organization_id,
                "webhook_id": target,
                "event_id": event.id,
                "event": event.type,
                "subject": event.subject[:512],
                "payload": payload,
                "status": PENDING,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for target in targets
        ],
    )
    return len(targets)


def queue_events(conn: Connection, organization_id: str, events: Iterable[WebhookEvent]) -> int:
    return sum(queue_event(conn, organization_id, event) for event in events)


def _webhook(m: RowMapping) -> Webhook:
    return Webhook(
        id=m["id"],
        organization_id=m["organization_id"],
        url=m["url"],
        format=m["format"],
        events=json.loads(m["events"]),
        name=m["name"],
        created_by=m["created_by"],
        created_at=m["created_at"],
    )


def _delivery(m: RowMapping) -> WebhookDelivery:
    return WebhookDelivery(**{k: m[k] for k in WebhookDelivery.model_fields})


class WebhookRows(Rows):
    """The ``webhooks`` and ``webhook_deliveries`` tables."""

    outbox: Outbox  # set by SQLStore: wakes this process's sender

    # -- endpoints ---------------------------------------------------------------------------

    def create_webhook(
        self,
        organization_id: str,
        *,
        url: str,
        format: str,
        events: Sequence[str],
        secret: str | None,
        name: str | None,
        actor: str,
        request_id: str | None = None,
    ) -> Webhook:
        """Register an endpoint and audit it, in one transaction."""
        hook = Webhook(
            id=new_webhook_id(),
            organization_id=organization_id,
            url=url,
            format=format,
            events=list(dict.fromkeys(events)),
            name=name,
            created_by=actor,
            created_at=utcnow(),
        )
        with self.database.write() as conn:
            conn.execute(
                insert(webhooks).values(
                    **hook.model_dump(exclude={"events"}),
                    events=json.dumps(hook.events),
                    secret=secret,
                )
            )
            write_audit(
                conn,
                organization_id,
                action="webhook.create",
                actor=actor,
                target_type="webhook",
                target_id=hook.id,
                detail=f"{format} webhook for {', '.join(hook.events)}",
                request_id=request_id,
                created_at=hook.created_at,
            )
        return hook

    def list_webhooks(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[WebhookSummary], int]:
        """The organization's webhooks, newest first, each with its pending count and its
        latest attempted delivery."""
        w, d = webhooks.c, webhook_deliveries.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(webhooks)
                .where(w.organization_id == organization_id)
                .order_by(w.created_at.desc(), w.id)
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count())
                .select_from(webhooks)
                .where(w.organization_id == organization_id)
            ).scalar_one()
            ids = [r.id for r in rows]
            mine = and_(d.organization_id == organization_id, d.webhook_id.in_(ids))
            pending: dict[str, int] = {
                r.webhook_id: int(r.n)
                for r in conn.execute(
                    select(d.webhook_id, func.count().label("n"))
                    .where(mine, d.status == PENDING)
                    .group_by(d.webhook_id)
                )
            }
            last_seq = (
                select(d.webhook_id, func.max(d.seq).label("seq"))
                .where(mine, d.attempts > 0)
                .group_by(d.webhook_id)
                .subquery()
            )
            latest = {
                r.webhook_id: _delivery(r._mapping)
                for r in conn.execute(
                    select(webhook_deliveries).join(last_seq, last_seq.c.seq == d.seq)
                )
            }
        return [
            WebhookSummary(
                webhook=_webhook(r._mapping),
                pending=int(pending.get(r.id, 0)),
                last_delivery=latest.get(r.id),
            )
            for r in rows
        ], int(count)

    def get_webhook(self, organization_id: str, webhook_id: str) -> Webhook:
        with self.database.read() as conn:
            row = conn.execute(
                select(webhooks).where(
                    webhooks.c.organization_id == organization_id, webhooks.c.id == webhook_id
                )
            ).first()
        if row is None:
            raise WebhookNotFoundError(webhook_id)
        return _webhook(row._mapping)

    def delete_webhook(
        self, organization_id: str, webhook_id: str, *, actor: str, request_id: str | None = None
    ) -> Webhook:
        """Remove a webhook with its delivery log (pending deliveries are not sent)."""
        w, d = webhooks.c, webhook_deliveries.c
        with self.database.write() as conn:
            row = conn.execute(
                delete(webhooks)
                .where(w.organization_id == organization_id, w.id == webhook_id)
                .returning(*webhooks.c)
            ).first()
            if row is None:
                raise WebhookNotFoundError(webhook_id)
            conn.execute(
                delete(webhook_deliveries).where(
                    d.organization_id == organization_id, d.webhook_id == webhook_id
                )
            )
            write_audit(
                conn,
                organization_id,
                action="webhook.delete",
                actor=actor,
                target_type="webhook",
                target_id=webhook_id,
                request_id=request_id,
            )
        return _webhook(row._mapping)

    # -- events ------------------------------------------------------------------------------

    def queue_webhook_events(self, organization_id: str, events: Iterable[WebhookEvent]) -> int:
        """Queue events that are not part of another write (an ack timeout) on their own."""
        with self.database.write() as conn:
            queued = queue_events(conn, organization_id, events)
        if queued:
            self.outbox.queued()
        return queued

    def queue_webhook_test(
        self, organization_id: str, webhook_id: str, *, actor: str
    ) -> WebhookDelivery:
        """Queue a ``webhook.test`` event for one webhook; its delivery."""
        event = webhook_test_event(organization_id, webhook_id, requested_by=actor, now=utcnow())
        with self.database.write() as conn:
            if not queue_event(conn, organization_id, event, only=webhook_id):
                raise WebhookNotFoundError(webhook_id)
            row = conn.execute(
                select(webhook_deliveries).where(
                    webhook_deliveries.c.organization_id == organization_id,
                    webhook_deliveries.c.event_id == event.id,
                )
            ).one()
        self.outbox.queued()
        return _delivery(row._mapping)

    def list_deliveries(
        self,
        organization_id: str,
        webhook_id: str,
        *,
        status: str | None = None,
        event_id: str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[WebhookDelivery], int]:
        """A webhook's delivery log, newest first."""
        d = webhook_deliveries.c
        where = and_(d.organization_id == organization_id, d.webhook_id == webhook_id)
        if status is not None:
            where = and_(where, d.status == status)
        if event_id is not None:
            where = and_(where, d.event_id == event_id)
        with self.database.read() as conn:
            known = conn.execute(
                select(webhooks.c.id).where(
                    webhooks.c.organization_id == organization_id, webhooks.c.id == webhook_id
                )
            ).first()
            if known is None:
                raise WebhookNotFoundError(webhook_id)
            rows = conn.execute(
                select(webhook_deliveries)
                .where(where)
                .order_by(d.seq.desc())
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(webhook_deliveries).where(where)
            ).scalar_one()
        return [_delivery(r._mapping) for r in rows], int(count)

    # -- the sender's side -------------------------------------------------------------------

    def _due(self, now: datetime) -> Any:
        d = webhook_deliveries.c
        older = webhook_deliveries.alias("older")
        waits = (
            select(older.c.seq)
            .where(
                older.c.webhook_id == d.webhook_id,
                older.c.subject == d.subject,
                older.c.status == PENDING,
                older.c.seq < d.seq,
            )
            .exists()
        )
        return and_(
            d.status == PENDING,
            d.next_attempt_at <= now,
            or_(d.lease_until.is_(None), d.lease_until < now),
            ~waits,
        )

    def deliveries_due(self, now: datetime) -> bool:
        """Whether any delivery may be claimed now (a read: senders poll with it)."""
        with self.database.read() as conn:
            found = conn.execute(
                select(webhook_deliveries.c.seq).where(self._due(now)).limit(1)
            ).first()
        return found is not None

    def claim_deliveries(
        self, owner: str, *, now: datetime, lease: timedelta, limit: int
    ) -> list[Claim]:
        """Lease up to ``limit`` due deliveries to ``owner`` until ``now + lease``, oldest first.

        No two senders lease one delivery: PostgreSQL locks the rows read (skipping rows another
        sender holds) until the lease is committed; SQLite runs the claim under its write lock.
        """
        d = webhook_deliveries.c
        with self.database.write() as conn:
            seqs = (
                conn.execute(
                    select(d.seq)
                    .where(self._due(now))
                    .order_by(d.seq)
                    .limit(limit)
                    .with_for_update(skip_locked=True, of=webhook_deliveries)
                )
                .scalars()
                .all()
            )
            if not seqs:
                return []
            conn.execute(
                update(webhook_deliveries)
                .where(d.seq.in_(seqs))
                .values(lease_until=now + lease, leased_by=owner)
            )
            rows = conn.execute(
                select(webhook_deliveries, webhooks.c.url, webhooks.c.format, webhooks.c.secret)
                .join(webhooks, webhooks.c.id == d.webhook_id)
                .where(d.seq.in_(seqs))
                .order_by(d.seq)
            ).all()
        return [
            Claim(
                seq=r.seq,
                delivery=_delivery(r._mapping),
                payload=r.payload,
                url=r.url,
                format=r.format,
                secret=r.secret,
                organization_id=r.organization_id,
            )
            for r in rows
        ]

    def finish_delivery(
        self,
        claim: Claim,
        owner: str,
        *,
        at: datetime,
        delivered: bool,
        next_attempt_at: datetime | None,
        response_status: int | None,
        duration_ms: float | None,
        error: str | None,
    ) -> bool:
        """Record an attempt of a leased delivery: delivered, retried at ``next_attempt_at``, or
        (neither) given up, and count it (``agentguard_webhook_*`` in ``/metrics``). False if
        the lease was lost (the webhook was removed meanwhile): nothing is counted."""
        d = webhook_deliveries.c
        status = DELIVERED if delivered else PENDING if next_attempt_at is not None else FAILED
        with self.database.write() as conn:
            done = conn.execute(
                update(webhook_deliveries)
                .where(d.seq == claim.seq, d.leased_by == owner)
                .values(
                    status=status,
                    attempts=d.attempts + 1,
                    last_attempt_at=at,
                    next_attempt_at=next_attempt_at,
                    delivered_at=at if delivered else None,
                    response_status=response_status,
                    duration_ms=duration_ms,
                    error=error[:ERROR_LENGTH] if error else None,
                    lease_until=None,
                    leased_by=None,
                )
            )
            if done.rowcount:
                labels = {
                    "webhook": claim.delivery.webhook_id,
                    "format": claim.format,
                    "event": claim.delivery.event,
                }
                counted = {(WEBHOOK_DELIVERIES if delivered else WEBHOOK_FAILURES).key(**labels): 1}
                if status == FAILED:
                    counted[WEBHOOK_GIVEN_UP.key(**labels)] = 1
                bump(conn, claim.organization_id, counted)  # last in the transaction
        return bool(done.rowcount)

    def release_deliveries(self, owner: str) -> int:
        """Give back the leases of a sender that stops before attempting them."""
        d = webhook_deliveries.c
        with self.database.write() as conn:
            done = conn.execute(
                update(webhook_deliveries)
                .where(d.leased_by == owner, d.status == PENDING)
                .values(lease_until=None, leased_by=None)
            )
        return int(done.rowcount)
