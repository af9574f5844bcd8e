"""Rows written straight to the database, for tests of what the API did not see being stored."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def intervention_row(
    iv_id: str,
    organization_id: str,
    *,
    action: str = "send_email",
    target_id: str = "bot",
    when: datetime | None = None,
) -> dict[str, Any]:
    """The values of an ``agentguard_interventions`` row: a HARD_BLOCK of agent ``target_id``."""
    when = when or datetime.now(timezone.utc)
    return {
        "organization_id": organization_id,
        "id": iv_id,
        "type": "HARD_BLOCK",
        "action": action,
        "target_type": "agent",
        "target_id": target_id,
        "occurred_at": when,
        "received_at": when,
    }
