"""Where a guard's kill state comes from."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from .errors import AgentGuardError
from .index import KillIndex
from .interventions import InterventionRecorder
from .protocol import HeartbeatReply, HeartbeatReport
from .records import Intervention, KillChange, KillStatus
from .scope import Scope
from .store import KillStore
from .targets import validate_target


class HeartbeatsUnsupportedError(AgentGuardError):
    """The guard's kill state lives only in this process: there is no server to tell."""


class _Clear:
    """The verdict of a per-call check that found nothing killed."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR = _Clear()
Verdict = KillStatus | _Clear | None
"""A killed status, CLEAR, or None when the source cannot tell."""


class KillStateSource(ABC):
    """Feeds a guard's :class:`KillIndex` and carries out its kills, revives and reports."""

    organization_id: str
    index: KillIndex

    @abstractmethod
    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        expires_at: datetime | None = None,
    ) -> KillChange:
        """Kill a target (until ``expires_at``, if given); ``AlreadyKilledError`` if it is."""

    @abstractmethod
    def revive(
        self, target_type: str, target_id: str, *, actor: str, reason: str | None = None
    ) -> KillChange:
        """Revive a target (``reason``: why); raise ``NotKilledError`` if it is not killed."""

    def finish_run(self, run_id: str, *, actor: str) -> KillChange | None:
        """The run is over: end its kill made ``until`` the run ends; the revive, if any.

        Only a server's kills can be made so (``POST /kill`` with ``until``): a source in this
        process alone has none to end.
        """
        return None

    @abstractmethod
    def status(self, target_type: str, target_id: str) -> KillStatus:
        """The kill status of one target."""

    @abstractmethod
    def report_interventions(self, items: list[Intervention], dropped: int = 0) -> None:
        """Store interventions (called from a background thread; may block, may raise).

        ``dropped`` counts interventions lost to a full buffer since the last accepted batch.
        """

    @abstractmethod
    def interventions(self, **filters: Any) -> tuple[list[Intervention], int]:
        """Stored interventions matching the filters, newest first, and their total count."""

    strict = False
    """Whether every guarded call must be verified with ``verify`` (no cached view)."""

    def verify(self, action: str, scope: Scope) -> Verdict:
        """Check one call at the source itself; ``None`` when this source cannot."""
        return None

    supports_heartbeats = False
    """Whether :meth:`heartbeat` reaches a server."""

    acknowledges_changes = False
    """Whether the source itself tells the server each kill-state version it applied."""

    def heartbeat(self, report: HeartbeatReport) -> HeartbeatReply:
        """Send a heartbeat; the answer carries the instance's health and kill state."""
        raise HeartbeatsUnsupportedError(
            f"heartbeats need a server; {type(self).__name__} keeps kill state in this process"
        )

    def save_checkpoint(self, key: str, state_json: str) -> None:
        """Store a validated JSON checkpoint under ``key``."""
        raise NotImplementedError(f"{type(self).__name__} does not store checkpoints")

    def load_checkpoint(self, key: str) -> str | None:
        """The JSON stored under ``key``, or None."""
        raise NotImplementedError(f"{type(self).__name__} does not store checkpoints")

    def make_recorder(self) -> InterventionRecorder:
        """The buffer that delivers this source's interventions in the background."""
        return InterventionRecorder(self.report_interventions)

    def age(self, now: float) -> float:
        """Seconds since the index was last known to be current (0 for authoritative sources)."""
        if self.index.fresh_until == math.inf:
            return 0.0
        synced = self.index.synced_at
        return math.inf if synced is None else max(0.0, now - synced)

    def close(self) -> None:  # noqa: B027 - optional hook: most sources hold nothing to release
        """Release connections and threads."""


class LocalSource(KillStateSource):
    """A store in this process (in memory, or a mounted server's): always current, no I/O hop."""

    def __init__(self, store: KillStore, organization_id: str) -> None:
        self.store = store
        self.organization_id = organization_id
        self.index = KillIndex()
        # Subscribe before the snapshot: a change committed in between is applied, then the
        # snapshot (at least as new) replaces the index.
        self._unsubscribe = store.subscribe(self._on_change)
        self.index.replace(store.snapshot(organization_id))
        self.index.mark_authoritative()

    def _on_change(self, organization_id: str, change: KillChange) -> None:
        if organization_id == self.organization_id:
            self.index.apply(change)

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        expires_at: datetime | None = None,
    ) -> KillChange:
        change = self.store.kill(
            self.organization_id,
            target_type,
            target_id,
            reason=reason,
            actor=actor,
            expires_at=expires_at,
        )
        self.index.apply(change)
        return change

    def revive(
        self, target_type: str, target_id: str, *, actor: str, reason: str | None = None
    ) -> KillChange:
        change = self.store.revive(
            self.organization_id, target_type, target_id, actor=actor, reason=reason
        )
        self.index.apply(change)
        return change

    def status(self, target_type: str, target_id: str) -> KillStatus:
        target_type, target_id = validate_target(target_type, target_id)
        return KillStatus.of(target_type, target_id, self.index.get(target_type, target_id))

    def report_interventions(self, items: list[Intervention], dropped: int = 0) -> None:
        # In-process: the recorder has already logged any drop where the operator sees it.
        self.store.add_interventions(self.organization_id, items)

    def interventions(self, **filters: Any) -> tuple[list[Intervention], int]:
        return self.store.list_interventions(self.organization_id, **filters)

    def save_checkpoint(self, key: str, state_json: str) -> None:
        self.store.save_checkpoint(self.organization_id, key, state_json)

    def load_checkpoint(self, key: str) -> str | None:
        return self.store.load_checkpoint(self.organization_id, key)

    def close(self) -> None:
        self._unsubscribe()
