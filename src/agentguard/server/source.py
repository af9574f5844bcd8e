"""The kill-state source of ``Guard(server)``: the server's own index, no HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..protocol import HeartbeatReply, HeartbeatReport
from ..records import Intervention, KillChange, KillStatus
from ..sources import KillStateSource
from ..targets import require_reason, validate_target
from .fleet import Fleet
from .store.sqlstore import SQLStore


class ServerSource(KillStateSource):
    """Reads the organization's index of a :class:`KillSwitchServer` in this process.

    The index is the one the server's ``/check`` answers from, so a kill through the HTTP API
    (or by another process, once the change feed hears of it) refuses this guard's next call.
    """

    supports_heartbeats = True

    def __init__(
        self,
        store: SQLStore,
        organization_id: str,
        *,
        fleet: Fleet | None = None,
        reason_required: bool = False,
    ) -> None:
        self.store = store
        self.reason_required = reason_required
        self.organization_id = organization_id
        self.index = store.feed.index(organization_id)
        self.fleet = fleet

    def heartbeat(self, report: HeartbeatReport) -> HeartbeatReply:
        if self.fleet is None:
            return super().heartbeat(report)
        return self.fleet.heartbeat(self.organization_id, report)

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        expires_at: datetime | None = None,
    ) -> KillChange:
        if self.reason_required:
            validate_target(target_type, target_id)
            require_reason(reason)
        # In this process, a guard's rules kill with actor ``rule:<name>`` (rules.Trip.actor).
        rule = actor.removeprefix("rule:") if actor.startswith("rule:") else None
        return self.store.kill(
            self.organization_id,
            target_type,
            target_id,
            reason=reason,
            actor=actor,
            rule=rule,
            expires_at=expires_at,
        )

    def revive(
        self, target_type: str, target_id: str, *, actor: str, reason: str | None = None
    ) -> KillChange:
        if self.reason_required:
            validate_target(target_type, target_id, existing=True)
            require_reason(reason, "revives")
        return self.store.revive(
            self.organization_id, target_type, target_id, actor=actor, reason=reason
        )

    def finish_run(self, run_id: str, *, actor: str) -> KillChange | None:
        if self.fleet is not None:
            return self.fleet.finish_run(self.organization_id, run_id, actor=actor)
        note = f"ended with run {run_id!r}: finished"
        return self.store.end_with_run(self.organization_id, run_id, actor=actor, note=note)

    def status(self, target_type: str, target_id: str) -> KillStatus:
        target_type, target_id = validate_target(target_type, target_id)
        self.store.feed.refresh()
        return KillStatus.of(target_type, target_id, self.index.get(target_type, target_id))

    def report_interventions(self, items: list[Intervention], dropped: int = 0) -> None:
        self.store.add_interventions(self.organization_id, items)

    def interventions(self, **filters: Any) -> tuple[list[Intervention], int]:
        return self.store.list_interventions(self.organization_id, **filters)

    def save_checkpoint(self, key: str, state_json: str) -> None:
        self.store.save_checkpoint(self.organization_id, key, state_json)

    def load_checkpoint(self, key: str) -> str | None:
        return self.store.load_checkpoint(self.organization_id, key)
