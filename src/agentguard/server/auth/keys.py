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
import logging
import re
import secrets
import string
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from pydantic import BaseModel, ConfigDict

from ...errors import InvalidInputError
from ...protocol import SCOPES
from ...records import utcnow
from ..store.database import Database, is_unavailable
from ..store.feed import ChangeFeed
from ..store.keys import ApiKey, KeyRows
from .binding import validate_agents

KEY_PREFIX = "ag_"
_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 8
_SECRET_LENGTH = 40  # 40 characters of 62 symbols: about 238 bits
_TOKEN = re.compile(rf"^ag_([A-Za-z0-9]{{{_ID_LENGTH}}})_([A-Za-z0-9]{{{_SECRET_LENGTH}}})$")
_CACHE_SIZE = 10_000

logger = logging.getLogger("agentguard.server")


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

    def __init__(self, database: Database, feed: ChangeFeed) -> None:
        self._rows = KeyRows(database)
        self._feed = feed
        self._verified: dict[str, VerifiedKey] = {}
        # Bumped whenever keys may have been revoked: a verification that read the database
        # under an older generation does not cache what it read.
        self._generation = 0
        # Keys that open connections (streams) still rely on, with how many rely on each.
        self._watched: Counter[str] = Counter()
        self._revocation_listeners: list[Callable[[set[str]], None]] = []
        self._lock = threading.Lock()
        feed.on_external_change(self.recheck)

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
        self._rows.create(key, hash_secret(token), request_id=request_id)
        return key, token

    def list(
        self, organization_id: str, *, skip: int = 0, limit: int = 100
    ) -> tuple[list[ApiKey], int]:
        """The organization's keys, newest first (revoked ones included), and their count."""
        return self._rows.list(organization_id, skip=skip, limit=limit)

    def get(self, organization_id: str, key_id: str) -> ApiKey:
        """One key of the organization; :class:`KeyNotFoundError` if there is none."""
        return self._rows.get(organization_id, key_id)

    def revoke(
        self, organization_id: str, key_id: str, *, actor: str, request_id: str | None = None
    ) -> ApiKey:
        """Revoke a key at once in this process, and in others as soon as they hear of it."""
        # The revocation block waits, after the commit, for every listening process.
        with self._feed.key_revocation() as notice:
            key = self._rows.revoke(
                organization_id,
                key_id,
                actor=actor,
                now=utcnow(),
                notice=notice,
                request_id=request_id,
            )
            self.forget([key_id])
        return key

    def count(self) -> int:
        """How many keys exist in all organizations (revoked included)."""
        return self._rows.count()

    def cached(self, token: str) -> VerifiedKey | None:
        """The verified key for a token if this process has already verified it (no I/O).

        ``None`` while the cache cannot be trusted (the change feed is not known to be
        current), so the caller verifies the token against the database instead.
        """
        if not self._feed.trusts_key_cache():
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
            found = self._rows.find(KEY_PREFIX + match.group(1))
        except Exception as exc:
            # The database is away, so every route that changes or reads stored data answers
            # 503 anyway: a key verified before may still read kill state from the index
            # (/check, /state, the stream), as guards need through an outage.
            known = self._verified.get(digest)
            if known is not None and is_unavailable(exc):
                return known
            raise
        if found is None:
            return None
        key, secret_hash = found
        if key.revoked_at is not None or not hmac.compare_digest(secret_hash, digest):
            return None
        verified = VerifiedKey(
            id=key.id,
            organization_id=key.organization_id,
            owner=key.owner,
            scopes=frozenset(key.scopes),
            agents=tuple(key.agents or ()),
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
        return self._rows.revoked_among(key_ids)

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
