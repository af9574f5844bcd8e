"""The narrow interface every kill-state store implements, and the in-memory store."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol, runtime_checkable

from .errors import AlreadyKilledError, NotKilledError
from .records import (
    AuditEntry,
    Intervention,
    KillChange,
    KillSwitch,
    Snapshot,
    new_id,
    utcnow,
)
from .targets import EXPIRY_ACTOR, check_organization_target, validate_reason, validate_target

ChangeListener = Callable[[str, KillChange], None]
"""Called with ``(organization_id, change)`` after a change is committed."""


@runtime_checkable
class KillStore(Protocol):
    """Durable kill state of many organizations. The SQLAlchemy store implements it too.

    ``kill`` and ``revive`` commit the record, the next version and an audit entry together;
    at most one active kill switch exists per (organization, target).
    """

    def kill(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        request_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> KillChange: ...

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
        """Revive a target; ``reason`` (why) goes into the audit entry."""
        ...

    def expire_due(self, now: datetime | None = None) -> list[KillChange]:
        """Revive (as ``expiry``) every time-limited kill whose ``expires_at`` has passed.

        Each expiry happens once, however many processes share the store and call this.
        """
        ...

    def get_active(
        self, organization_id: str, target_type: str, target_id: str
    ) -> KillSwitch | None: ...

    def list_active(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[KillSwitch], int]: ...

    def snapshot(self, organization_id: str) -> Snapshot: ...

    def changes_since(
        self, organization_id: str, version: int, *, limit: int = 1000
    ) -> list[KillChange] | None:
        """Changes newer than ``version`` in order, or ``None`` if they are no longer kept."""
        ...

    def add_interventions(self, organization_id: str, items: Iterable[Intervention]) -> int:
        """Store interventions, skipping ids already stored; return how many were new."""
        ...

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
        """Matching interventions, newest first, and how many match in all."""
        ...

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
    ) -> tuple[list[AuditEntry], int]: ...

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` after every committed change; returns an unsubscribe function."""
        ...

    def save_checkpoint(self, organization_id: str, key: str, state_json: str) -> None:
        """Store (replace) the checkpoint ``key``; ``state_json`` is already validated."""
        ...

    def load_checkpoint(self, organization_id: str, key: str) -> str | None:
        """The checkpoint stored under ``key``, or None."""
        ...


class MemoryStore:
    """Kill state in this process's memory: the store of ``Guard()`` with no server.

    A time-limited kill is revived by a timer thread when it expires.
    """

    def __init__(self, *, change_log_size: int = 10_000) -> None:
        # Re-entrant: listeners run under the lock (so they see changes in version order)
        # and may read the store.
        self._lock = threading.RLock()
        self._active: dict[tuple[str, str, str], KillSwitch] = {}
        self._versions: dict[str, int] = {}
        self._changes: dict[str, deque[KillChange]] = {}
        self._change_log_size = change_log_size
        self._interventions: dict[str, dict[str, Intervention]] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._listeners: list[ChangeListener] = []
        self._checkpoints: dict[tuple[str, str], str] = {}
        self._timer: threading.Timer | None = None  # fires at the earliest expiry
        self._timer_at: datetime | None = None

    def kill(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        request_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> KillChange:
        target_type, target_id = validate_target(target_type, target_id)
        reason = validate_reason(reason)
        check_organization_target(organization_id, target_type, target_id)
        key = (organization_id, target_type, target_id)
        with self._lock:
            existing = self._active.get(key)
            if existing is not None:
                raise AlreadyKilledError(existing)
            ks = KillSwitch(
                id=new_id(),
                target_type=target_type,
                target_id=target_id,
                reason=reason,
                is_active=True,
                killed_by=actor,
                killed_at=utcnow(),
                organization_id=organization_id,
                expires_at=expires_at,
            )
            self._active[key] = ks
            change = self._commit(organization_id, "kill", ks, actor, request_id)
            self._notify(organization_id, change)
            if expires_at is not None:
                self._schedule()
        return change

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
        target_type, target_id = validate_target(target_type, target_id, existing=True)
        reason = validate_reason(reason)
        key = (organization_id, target_type, target_id)
        with self._lock:
            existing = self._active.pop(key, None)
            if existing is None:
                raise NotKilledError(target_type, target_id)
            change = self._revive(organization_id, existing, actor, request_id, reason)
        return change

    def _revive(
        self, org: str, ks: KillSwitch, actor: str, request_id: str | None, detail: str | None
    ) -> KillChange:
        revived = ks.model_copy(
            update={"is_active": False, "revived_by": actor, "revived_at": utcnow()}
        )
        change = self._commit(org, "revive", revived, actor, request_id, detail)
        self._notify(org, change)
        return change

    def expire_due(self, now: datetime | None = None) -> list[KillChange]:
        now = now or utcnow()
        changes = []
        with self._lock:
            due = [
                (key, ks)
                for key, ks in self._active.items()
                if ks.expires_at is not None and ks.expires_at <= now
            ]
            for key, ks in sorted(due, key=lambda item: item[1].expires_at or now):
                del self._active[key]
                assert ks.expires_at is not None
                note = f"expired at {ks.expires_at.isoformat()}"
                changes.append(self._revive(key[0], ks, EXPIRY_ACTOR, None, note))
            self._schedule()
        return changes

    def _schedule(self) -> None:
        """Set the timer for the earliest expiry (called under the lock)."""
        earliest = min(
            (ks.expires_at for ks in self._active.values() if ks.expires_at is not None),
            default=None,
        )
        if earliest == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, earliest
        if earliest is not None:
            delay = max(0.0, (earliest - utcnow()).total_seconds())
            timer = threading.Timer(delay, self._on_timer)
            timer.daemon = True
            timer.name = "agentguard-expiry"
            self._timer = timer
            timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_at = None  # a timer that fired a little early is set again
        self.expire_due()

    def _commit(
        self,
        org: str,
        kind: str,
        ks: KillSwitch,
        actor: str,
        request_id: str | None,
        detail: str | None = None,
    ) -> KillChange:
        version = self._versions.get(org, 0) + 1
        self._versions[org] = version
        change = KillChange(version=version, kind=kind, kill_switch=ks)  # type: ignore[arg-type]
        log = self._changes.setdefault(org, deque(maxlen=self._change_log_size))
        log.append(change)
        self._audit.setdefault(org, []).append(
            AuditEntry(
                id=new_id(),
                organization_id=org,
                action=kind,
                actor=actor,
                target_type=ks.target_type,
                target_id=ks.target_id,
                detail=ks.reason if kind == "kill" else detail,
                request_id=request_id,
                version=version,
                created_at=ks.killed_at if kind == "kill" else (ks.revived_at or utcnow()),
            )
        )
        return change

    def _notify(self, org: str, change: KillChange) -> None:
        for listener in list(self._listeners):
            listener(org, change)

    def get_active(
        self, organization_id: str, target_type: str, target_id: str
    ) -> KillSwitch | None:
        target_type, target_id = validate_target(target_type, target_id)
        return self._active.get((organization_id, target_type, target_id))

    def list_active(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[KillSwitch], int]:
        with self._lock:
            rows = [ks for (org, _, _), ks in self._active.items() if org == organization_id]
        rows.sort(key=lambda ks: ks.killed_at, reverse=True)
        return rows[skip : skip + limit], len(rows)

    def snapshot(self, organization_id: str) -> Snapshot:
        with self._lock:
            active = [ks for (org, _, _), ks in self._active.items() if org == organization_id]
            version = self._versions.get(organization_id, 0)
        return Snapshot(organization_id=organization_id, version=version, active=active)

    def changes_since(
        self, organization_id: str, version: int, *, limit: int = 1000
    ) -> list[KillChange] | None:
        with self._lock:
            log = list(self._changes.get(organization_id, ()))
            current = self._versions.get(organization_id, 0)
        if version >= current:
            return []
        newer = [c for c in log if c.version > version]
        if not newer or newer[0].version != version + 1:
            return None  # the log no longer reaches back that far
        return newer[:limit]

    def add_interventions(self, organization_id: str, items: Iterable[Intervention]) -> int:
        added = 0
        with self._lock:
            stored = self._interventions.setdefault(organization_id, {})
            for item in items:
                if item.id not in stored:
                    stored[item.id] = item
                    added += 1
        return added

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
        with self._lock:
            rows = list(self._interventions.get(organization_id, {}).values())
        rows = [
            iv
            for iv in rows
            if (target_type is None or iv.target_type == target_type)
            and (target_id is None or iv.target_id == target_id)
            and (type is None or iv.type == type)
            and (action is None or iv.action == action)
            and (since is None or iv.occurred_at >= since)
        ]
        rows.reverse()  # of equal times, the one stored last comes first (as in the SQL store)
        rows.sort(key=lambda iv: iv.occurred_at, reverse=True)
        return rows[skip : skip + limit], len(rows)

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
        with self._lock:
            rows = list(self._audit.get(organization_id, ()))
        rows = [
            e
            for e in rows
            if (action is None or e.action == action)
            and (target_type is None or e.target_type == target_type)
            and (target_id is None or e.target_id == target_id)
            and (since is None or e.created_at >= since)
        ]
        rows.reverse()
        return rows[skip : skip + limit], len(rows)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def save_checkpoint(self, organization_id: str, key: str, state_json: str) -> None:
        with self._lock:
            self._checkpoints[(organization_id, key)] = state_json

    def load_checkpoint(self, organization_id: str, key: str) -> str | None:
        with self._lock:
            return self._checkpoints.get((organization_id, key))
