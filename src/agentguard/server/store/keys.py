"""API key rows: stored hashed, listed without the hash, revoked once; every change audited."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import RowMapping, func, insert, select, update

from ...errors import AgentGuardError
from .audit import write_audit
from .feed import KEYS_CHANNEL
from .rows import Rows
from .tables import api_keys


class KeyNotFoundError(AgentGuardError):
    """No such API key in the organization (HTTP 404)."""


class KeyRevokedError(AgentGuardError):
    """The API key is already revoked (HTTP 409)."""


class ApiKey(BaseModel):
    """An API key as listed: everything but the secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    owner: str
    name: str | None = None
    scopes: list[str]
    # The agents an agent key speaks for; None for a key made before keys named them.
    agents: list[str] | None = None
    created_by: str
    created_at: datetime
    revoked_by: str | None = None
    revoked_at: datetime | None = None


class KeyRows(Rows):
    """The ``api_keys`` table."""

    def create(self, key: ApiKey, secret_hash: str, *, request_id: str | None) -> None:
        """Store a new key and audit its creation, in one transaction."""
        scopes = ",".join(key.scopes)
        with self.database.write() as conn:
            conn.execute(
                insert(api_keys).values(
                    **key.model_dump(exclude={"scopes", "agents"}),
                    scopes=scopes,
                    agents=json.dumps(key.agents),
                    secret_hash=secret_hash,
                )
            )
            write_audit(
                conn,
                key.organization_id,
                action="key.create",
                actor=key.created_by,
                target_type="api_key",
                target_id=key.id,
                detail=f"owner={key.owner} scopes={scopes}"
                + (f" agents={','.join(key.agents)}" if key.agents else ""),
                request_id=request_id,
                created_at=key.created_at,
            )

    def list(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[ApiKey], int]:
        """The organization's keys, newest first (revoked ones included), and their count."""
        where = api_keys.c.organization_id == organization_id
        with self.database.read() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(where)
                .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
                .offset(skip)
                .limit(limit)
            ).all()
            count = conn.execute(
                select(func.count()).select_from(api_keys).where(where)
            ).scalar_one()
        return [_api_key(r._mapping) for r in rows], int(count)

    def get(self, organization_id: str, key_id: str) -> ApiKey:
        """One key of the organization."""
        with self.database.read() as conn:
            row = conn.execute(
                select(api_keys).where(
                    api_keys.c.organization_id == organization_id, api_keys.c.id == key_id
                )
            ).first()
        if row is None:
            raise KeyNotFoundError(f"no API key {key_id!r} in this organization")
        return _api_key(row._mapping)

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key with this id in any organization, and its secret's hash."""
        with self.database.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else (_api_key(row._mapping), row.secret_hash)

    def revoke(
        self,
        organization_id: str,
        key_id: str,
        *,
        actor: str,
        now: datetime,
        notice: str,
        request_id: str | None = None,
    ) -> ApiKey:
        """Revoke a key, audit it and notify other processes (``notice``), in one transaction."""
        with self.database.write() as conn:
            row = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.organization_id == organization_id,
                    api_keys.c.id == key_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now, revoked_by=actor)
                .returning(*api_keys.c)
            ).first()
            if row is None:
                existing = conn.execute(
                    select(api_keys.c.id).where(
                        api_keys.c.organization_id == organization_id, api_keys.c.id == key_id
                    )
                ).first()
                if existing is None:
                    raise KeyNotFoundError(f"no API key {key_id!r} in this organization")
                raise KeyRevokedError(f"API key {key_id!r} is already revoked")
            write_audit(
                conn,
                organization_id,
                action="key.revoke",
                actor=actor,
                target_type="api_key",
                target_id=key_id,
                request_id=request_id,
                created_at=now,
            )
            self.database.notify(conn, KEYS_CHANNEL, f"{key_id} {notice}")
        return _api_key(row._mapping)

    def count(self) -> int:
        """How many keys exist in all organizations (revoked included)."""
        with self.database.read() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def revoked_among(self, key_ids: Iterable[str]) -> set[str]:
        """Those of ``key_ids`` that are revoked now."""
        with self.database.read() as conn:
            return set(
                conn.execute(
                    select(api_keys.c.id).where(
                        api_keys.c.id.in_(set(key_ids)), api_keys.c.revoked_at.is_not(None)
                    )
                ).scalars()
            )


def _api_key(m: RowMapping) -> ApiKey:
    data: dict[str, Any] = dict(m)
    data.pop("secret_hash", None)
    data["scopes"] = data["scopes"].split(",")
    stored = data.get("agents")
    data["agents"] = None if stored is None else list(json.loads(stored))
    return ApiKey(**data)
