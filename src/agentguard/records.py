"""The records agentguard keeps: kill switches, versioned changes, statuses, interventions."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh random identifier."""
    return str(uuid.uuid4())


class KillSwitch(BaseModel):
    """One kill of one target: the seed's ``KillSwitchPublic`` record."""

    model_config = ConfigDict(frozen=True)

    id: str
    target_type: str
    target_id: str
    reason: str | None = None
    is_active: bool
    killed_by: str
    killed_at: datetime
    revived_by: str | None = None
    revived_at: datetime | None = None
    organization_id: str
    # A time-limited kill: when the server revives it (as ``expiry``). Absent from the record
    # of a kill that lasts until revived, which keeps the seed's exact shape.
    expires_at: datetime | None = Field(default=None, exclude_if=lambda v: v is None)


class KillChange(BaseModel):
    """A kill or revive, numbered by the organization's kill-state version."""

    model_config = ConfigDict(frozen=True)

    version: int
    kind: Literal["kill", "revive"]
    kill_switch: KillSwitch


class Snapshot(BaseModel):
    """All active kill switches of an organization as of ``version``."""

    # Parsing one keeps no value strings in pydantic's process-wide string cache (up to 16,384
    # ids of kills a guard no longer holds): a guard keeps only what its index keeps.
    model_config = ConfigDict(frozen=True, cache_strings="keys")

    organization_id: str
    version: int
    active: list[KillSwitch]


class KillStatus(BaseModel):
    """The answer to "is this target killed?"."""

    model_config = ConfigDict(frozen=True)

    is_killed: bool
    target_type: str
    target_id: str
    reason: str | None = None
    killed_at: datetime | None = None
    killed_by: str | None = None
    kill_switch_id: str | None = None

    @classmethod
    def of(cls, target_type: str, target_id: str, ks: KillSwitch | None) -> KillStatus:
        if ks is None:
            return cls(is_killed=False, target_type=target_type, target_id=target_id)
        return cls(
            is_killed=True,
            target_type=target_type,
            target_id=target_id,
            reason=ks.reason,
            killed_at=ks.killed_at,
            killed_by=ks.killed_by,
            kill_switch_id=ks.id,
        )


class InterventionType(str, Enum):
    """What a recorded decision did."""

    HARD_BLOCK = "HARD_BLOCK"  # a guarded call was refused
    OBSERVED = "OBSERVED"  # an observe-mode rule tripped; nothing was blocked
    UNAVAILABLE = "UNAVAILABLE"  # refused because kill state was unavailable (no kill)
    CANCELLED = "CANCELLED"  # a guarded call already running was stopped by a kill

    def __str__(self) -> str:
        return self.value


class Intervention(BaseModel):
    """A recorded decision about one guarded call; ``id`` makes re-sending idempotent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    type: InterventionType = InterventionType.HARD_BLOCK
    action: str = Field(min_length=1, max_length=256)
    target_type: str
    target_id: str = Field(max_length=256)
    kill_switch_id: str | None = None
    killed_by: str | None = None
    reason: str | None = Field(default=None, max_length=2000)
    agent_id: str | None = Field(default=None, max_length=256)
    run_id: str | None = Field(default=None, max_length=256)
    mission_id: str | None = Field(default=None, max_length=256)
    instance_id: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=256)  # a refused model call's model
    occurred_at: datetime = Field(default_factory=utcnow)
    # CANCELLED: how long the call had run when the kill stopped it.
    ran_for_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class AuditEntry(BaseModel):
    """One operator action: a kill, a revive, a key created or revoked."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    action: str
    actor: str
    target_type: str | None = None
    target_id: str | None = None
    detail: str | None = None
    request_id: str | None = None
    version: int | None = None
    created_at: datetime


class CallCounts(BaseModel):
    """Guarded calls that ran, were refused (by a kill or a rule), were stopped, or raised.

    ``executed`` counts calls admitted (their body started); of those, ``cancelled`` were
    stopped by a kill while running and ``failed`` raised otherwise (never both).
    ``unavailable`` counts calls refused because kill state was unavailable; they are not in
    ``refused`` (nor in the fleet's refused counts, which heartbeats report from ``refused``).
    """

    model_config = ConfigDict(frozen=True)

    executed: int = 0
    refused: int = 0
    failed: int = 0
    unavailable: int = 0
    cancelled: int = 0
