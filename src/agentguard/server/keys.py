"""API keys: generated once, stored hashed, verified from an in-process cache.

A revocation is final everywhere once :meth:`KeyStore.revoke` returns. In this process the
cache forgets the key at once, and a generation counter keeps a verification that read the
key before the revocation from caching it afterwards. Other processes forget it through the
change feed, and on PostgreSQL ``revoke`` returns only when every process listening has
acknowledged it (see :meth:`ChangeFeed.key_revocation`); a process whose listener is not
known to be current does not trust its cache and reads the key from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, insert, select, update

from ..errors import AgentGuardError, InvalidInputError
from ..records import utcnow
from .binding import validate_agents
from .database import is_unavailable
from .feed import KEYS_CHANNEL
from .sqlstore import SQLStore
from .tables import api_keys

SCOPES: tuple[str, ...] = ("admin", "operator", "agent", "read")
KEY_PREFIX = "ag_"
_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 8
_SECRET_LENGTH = 40  # 40 characters of 62 symbols: about 238 bits
_TOKEN = re.compile(rf"^ag_([A-Za-z0-9]{{{_ID_LENGTH}}})_([A-Za-z0-9]{{{_SECRET_LENGTH}}})$")
_CACHE_SIZE = 10_000

logger = logging.getLogger("agentguard.server")


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


class VerifiedKey(BaseModel):
    """What a valid presented key stands for."""

    model_config = ConfigDict(frozen=True)

    id: str
    organization_id: str
    owner: str
    scopes: frozenset[str]
    agents: tuple[str, ...] = ()


def hash_secret(token: str) -> str:
    """The stored form of a key.

    A plain SHA-256 is the right tool here: the secret has ~238 bits of randomness, so there is
    nothing to brute-force and a slow password hash (bcrypt, argon2) would only add latency to
    every request. Equal tokens hash equally, which lets the verified-key cache use the digest.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    """Return the scopes sorted and de-duplicated, or raise naming the unknown one."""
    result = sorted(set(scopes))
    if not result:
        raise InvalidInputError("scopes", f"must name at least one of {', '.join(SCOPES)}")
    for scope in result:
        if scope not in SCOPES:
            raise InvalidInputError("scopes", f"must be among {', '.join(SCOPES)}; got {scope!r}")
    return result


class KeyStore:
    """Create, list, revoke and verify API keys; every create and revoke is audited."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        self._database = store.database
        self._verified: dict[str, VerifiedKey] = {}
        # Bumped whenever keys may have been revoked: a verification that read the database
        # under an older generation does not cache what it read.
        self._generation = 0
        # Keys that open connections (streams) still rely on, with how many rely on each.
        self._watched: Counter[str] = Counter()
        self._revocation_listeners: list[Callable[[set[str]], None]] = []
        self._lock = threading.Lock()
        store.feed.on_external_change(self.recheck)

    def create(
        self,
        organization_id: str,
        *,
        owner: str,
        scopes: Iterable[str],
        name: str | None = None,
        agents: Iterable[str] | None = None,
        actor: str,
        request_id: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key; return it and its secret token, which is never retrievable again.

        ``agents`` (exact ids, ``prefix-*``, or ``*`` for any) are what an agent key speaks
        for; without them it speaks for no agent. Operator and admin keys speak for every agent
        whatever they name.
        """
        scope_list = validate_scopes(scopes)
        agent_list = validate_agents(agents or ())
        key_id = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_ID_LENGTH))
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LENGTH))
        token = f"{key_id}_{secret}"
        key = ApiKey(
            id=key_id,
            organization_id=organization_id,
            owner=owner,
            name=name,
            scopes=scope_list,
            agents=agent_list,
            created_by=actor,
            created_at=utcnow(),
        )
        with self._database.write() as conn:
            conn.execute(
                insert(api_keys).values(
                    **key.model_dump(exclude={"scopes", "agents"}),
                    scopes=",".join(scope_list),
                    agents=json.dumps(agent_list),
                    secret_hash=hash_secret(token),
                )
            )
            self._store.write_audit(
                conn,
                organization_id,
                action="key.create",
                actor=actor,
                target_type="api_key",
                target_id=key_id,
                detail=f"owner={owner} scopes={','.join(scope_list)}"
                + (f" agents={','.join(agent_list)}" if agent_list else ""),
                request_id=request_id,
                created_at=key.created_at,
            )
        return key, token

    def list(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[ApiKey], int]:
        """The organization's keys, newest first (revoked ones included), and their count."""
        where = api_keys.c.organization_id == organization_id
        with self._database.read() as conn:
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
        with self._database.read() as conn:
            row = conn.execute(
                select(api_keys).where(
                    api_keys.c.organization_id == organization_id, api_keys.c.id == key_id
                )
            ).first()
        if row is None:
            raise KeyNotFoundError(f"no API key {key_id!r} in this organization")
        return _api_key(row._mapping)

    def revoke(
        self, organization_id: str, key_id: str, *, actor: str, request_id: str | None = None
    ) -> ApiKey:
        """Revoke a key at once in this process, and in others as soon as they hear of it."""
        now = utcnow()
        # The revocation block waits, after the commit, for every listening process.
        with self._store.feed.key_revocation() as notice:
            with self._database.write() as conn:
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
                self._store.write_audit(
                    conn,
                    organization_id,
                    action="key.revoke",
                    actor=actor,
                    target_type="api_key",
                    target_id=key_id,
                    request_id=request_id,
                    created_at=now,
                )
                self._database.notify(conn, KEYS_CHANNEL, f"{key_id} {notice}")
            self.forget([key_id])
        return _api_key(row._mapping)

    def count(self) -> int:
        """How many keys exist in all organizations (revoked included)."""
        with self._database.read() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def cached(self, token: str) -> VerifiedKey | None:
        """The verified key for a token if this process has already verified it (no I/O).

        ``None`` while the cache cannot be trusted (the change feed is not known to be
        current), so the caller verifies the token against the database instead.
        """
        if not self._store.feed.trusts_key_cache():
            return None
        return self._verified.get(hash_secret(token))

    def verify(self, token: str) -> VerifiedKey | None:
        """The key a presented token belongs to, or ``None`` if it is unknown or revoked."""
        digest = hash_secret(token)
        hit = self.cached(token)
        if hit is not None:
            return hit
        match = _TOKEN.match(token)
        if match is None:
            return None
        generation = self._generation  # read before the database, compared before caching
        try:
            with self._database.read() as conn:
                row = conn.execute(
                    select(api_keys).where(api_keys.c.id == KEY_PREFIX + match.group(1))
                ).first()
        except Exception as exc:
            # The database is away, so every route that changes or reads stored data answers
            # 503 anyway: a key verified before may still read kill state from the index
            # (/check, /state, the stream), as guards need through an outage.
            known = self._verified.get(digest)
            if known is not None and is_unavailable(exc):
                return known
            raise
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, digest):
            return None
        verified = VerifiedKey(
            id=row.id,
            organization_id=row.organization_id,
            owner=row.owner,
            scopes=frozenset(row.scopes.split(",")),
            agents=tuple(_agents(row.agents) or ()),
        )
        with self._lock:
            if self._generation != generation:
                return verified  # keys were revoked meanwhile: valid when read, not cached
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.clear()
            self._verified[digest] = verified
        return verified

    def recheck(self) -> None:
        """Forget verified and watched keys that have been revoked meanwhile (by any process)."""
        with self._lock:
            self._generation += 1  # a verification reading before now must not cache
            known = {key.id for key in self._verified.values()} | set(self._watched)
        if known:
            revoked = self.revoked_among(known)
            if revoked:
                self.forget(revoked)

    def revoked_among(self, key_ids: Iterable[str]) -> set[str]:
        """Those of ``key_ids`` that are revoked now."""
        with self._database.read() as conn:
            return set(
                conn.execute(
                    select(api_keys.c.id).where(
                        api_keys.c.id.in_(set(key_ids)), api_keys.c.revoked_at.is_not(None)
                    )
                ).scalars()
            )

    def forget(self, key_ids: Iterable[str]) -> None:
        """Drop revoked keys from the verified-key cache and tell the revocation listeners."""
        gone = set(key_ids)
        with self._lock:
            self._generation += 1
            self._verified = {d: k for d, k in self._verified.items() if k.id not in gone}
            listeners = list(self._revocation_listeners)
        for listener in listeners:
            try:
                listener(gone)
            except Exception:  # one broken listener must not keep the others from hearing
                logger.exception("agentguard: revocation listener %r failed", listener)

    def watch(self, key_id: str) -> Callable[[], None]:
        """Keep checking ``key_id`` for revocation while something relies on it.

        Returns the function that ends the watch. Revocations by any process reach the
        :meth:`on_revoked` listeners: this one's at once, others' when the feed hears of them.
        """
        with self._lock:
            self._watched[key_id] += 1
        ended = threading.Event()

        def unwatch() -> None:
            with self._lock:
                if ended.is_set():
                    return
                ended.set()
                self._watched[key_id] -= 1
                if self._watched[key_id] <= 0:
                    del self._watched[key_id]

        return unwatch

    def on_revoked(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(key_ids)`` whenever keys are found revoked (from any thread)."""
        with self._lock:
            self._revocation_listeners.append(listener)


def _api_key(m: object) -> ApiKey:
    data = dict(m)  # type: ignore[call-overload]
    data.pop("secret_hash", None)
    data["scopes"] = data["scopes"].split(",")
    data["agents"] = _agents(data.get("agents"))
    return ApiKey(**data)


def _agents(stored: str | None) -> list[str] | None:
    return None if stored is None else list(json.loads(stored))
