"""Console sessions: an API key pasted once, exchanged for a signed cookie, with CSRF protection.

The cookie (``agentguard_session``: HttpOnly, SameSite=Strict, Secure over https) carries a
session id, the key id, organization, scopes and a CSRF token, signed with itsdangerous. Every
request made with it re-reads the key, so revoking the key ends its sessions, and looks the
session id up among the signed-out ones, so signing out ends the session on every replica (a
copy of the cookie is refused too). A request that changes state with the cookie must repeat
the CSRF token in ``X-CSRF-Token``; a request with an ``Authorization`` header never uses the
cookie.

Sessions are signed with ``KillSwitchServer(session_secret=...)``, else the
``AGENTGUARD_SESSION_SECRET`` environment variable, else a random secret of this process
(sessions then end at a restart and are not shared between worker processes).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response

from ..problems import ApiError
from ..store.database import Database
from ..store.keys import KeyNotFoundError
from ..store.sessions import SignOutRows
from .keys import KeyStore, VerifiedKey
from .principal import Principal

SESSION_COOKIE = "agentguard_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECRET_ENV = "AGENTGUARD_SESSION_SECRET"
DEFAULT_MAX_AGE = 12 * 3600  # seconds
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
_SALT = "agentguard.console.session"

logger = logging.getLogger("agentguard.server")


class SessionData(BaseModel):
    """What a session cookie says: the key it was made from and its CSRF token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sid: str
    key_id: str
    organization_id: str
    scopes: list[str]
    csrf: str


class ConsoleSessions:
    """Issue, read and re-validate console session cookies."""

    def __init__(
        self,
        keys: KeyStore,
        database: Database,
        secret: str | bytes | None = None,
        *,
        max_age: int = DEFAULT_MAX_AGE,
    ) -> None:
        self.keys = keys
        self._sign_outs = SignOutRows(database)
        self.max_age = max_age
        secret = secret or os.environ.get(SESSION_SECRET_ENV) or secrets.token_bytes(32)
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._sign_out_listeners: list[Callable[[set[str]], None]] = []

    def issue(self, key: VerifiedKey) -> tuple[str, SessionData]:
        """A new session of a verified key: the cookie value and what it carries."""
        data = SessionData(
            sid=secrets.token_urlsafe(24),
            key_id=key.id,
            organization_id=key.organization_id,
            scopes=sorted(key.scopes),
            csrf=secrets.token_urlsafe(32),
        )
        return self._serializer.dumps(data.model_dump()), data

    def read(self, value: str) -> tuple[SessionData, datetime]:
        """The session in a cookie value and when it expires; ``AuthenticationError`` if none."""
        try:
            payload, signed_at = self._serializer.loads(
                value, max_age=self.max_age, return_timestamp=True
            )
            data = SessionData.model_validate(payload)
        except SignatureExpired:
            raise AuthenticationError("the console session expired; sign in again") from None
        except (BadSignature, ValidationError):
            raise AuthenticationError("invalid console session; sign in again") from None
        return data, signed_at + timedelta(seconds=self.max_age)

    def principal(self, data: SessionData, expires: datetime | None = None) -> Principal:
        """The caller a session stands for, as its key is now (blocking: reads the database)."""
        if self._sign_outs.is_signed_out(data.sid):
            raise AuthenticationError("this console session was signed out; sign in again")
        try:
            key = self.keys.get(data.organization_id, data.key_id)
        except KeyNotFoundError:
            key = None
        if key is None or key.revoked_at is not None:
            raise AuthenticationError(
                "the API key of this console session was revoked; sign in again"
            )
        scopes = set(key.scopes) & set(data.scopes)
        return Principal(
            key.organization_id,
            key.owner,
            scopes,
            key_id=key.id,
            method="console",
            expires_at=expires,
            session_id=data.sid,
            agents=key.agents or (),
        )

    def sign_out(self, data: SessionData, expires: datetime) -> None:
        """End a session for good, on every replica (blocking: writes the database)."""
        self._sign_outs.sign_out(data.sid, expires)
        for listener in list(self._sign_out_listeners):
            try:
                listener({data.sid})
            except Exception:  # one broken listener must not keep the others from hearing
                logger.exception("agentguard: sign-out listener %r failed", listener)

    def on_signed_out(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(session_ids)`` when sessions are signed out in this process."""
        self._sign_out_listeners.append(listener)

    def signed_out_among(self, session_ids: Iterable[str]) -> set[str]:
        """Those of ``session_ids`` signed out by now, by any process (reads the database)."""
        return self._sign_outs.signed_out_among(session_ids)

    def set_cookie(self, response: Response, conn: HTTPConnection, value: str) -> None:
        """Attach a session cookie scoped to wherever the server is mounted."""
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=self.max_age,
            path=cookie_path(conn),
            secure=conn.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response, conn: HTTPConnection) -> None:
        """Remove the session cookie from the browser."""
        response.delete_cookie(
            SESSION_COOKIE,
            path=cookie_path(conn),
            secure=conn.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )


def cookie_path(conn: HTTPConnection) -> str:
    """The server's mount point, so the cookie reaches both the page and the API."""
    root = str(conn.scope.get("root_path", "")).rstrip("/")
    return f"{root}/"


def check_csrf(conn: HTTPConnection, data: SessionData) -> None:
    """Refuse a state-changing request whose ``X-CSRF-Token`` does not match the session's."""
    if conn.scope["type"] != "http" or conn.scope["method"] in SAFE_METHODS:
        return
    token = conn.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(token.encode(), data.csrf.encode()):
        raise ApiError(
            "forbidden",
            f"a request made with the console session cookie must send its {CSRF_HEADER} "
            "header; reload the console",
        )


class SessionAuth(AuthenticationBackend):
    """The console session cookie, for the API and the change stream.

    Raises ``AuthenticationError`` (401) for an expired, forged or revoked session, and an
    :class:`~agentguard.server.problems.ApiError` (403) for a missing or wrong CSRF token.
    """

    def __init__(self, sessions: ConsoleSessions) -> None:
        self.sessions = sessions

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if "authorization" in conn.headers:
            return None  # explicit credentials: never the cookie
        value = conn.cookies.get(SESSION_COOKIE)
        if not value:
            return None
        data, expires = self.sessions.read(value)
        principal = await run_in_threadpool(self.sessions.principal, data, expires)
        check_csrf(conn, data)
        return AuthCredentials(sorted(principal.scopes)), principal
