"""Checkpoints: an agent's saved state under a key, one per key and organization."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ...records import utcnow
from .rows import Rows, upsert
from .tables import checkpoints


class CheckpointRows(Rows):
    """Save and load checkpoints."""

    def save_checkpoint(self, organization_id: str, key: str, state_json: str) -> None:
        """Store (replace) the checkpoint ``key``; ``state_json`` is already validated."""
        with self.database.write() as conn:
            stmt = upsert(conn, checkpoints).values(
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
