"""Who is calling: principals, scopes, and the authentication backends.

Every backend is a Starlette :class:`~starlette.authentication.AuthenticationBackend` whose
user is a :class:`Principal`. API keys are always tried first; session backends (e.g.
:class:`~agentguard.server.auth.clerk.ClerkAuth`, :class:`HostUserAuth`) follow in the order given.

A browser sends cookies with requests that other sites make it send, so a state-changing
request authenticated by a cookie must prove it comes from this origin: the console's cookie
by its CSRF token, Clerk's ``__session`` cookie and the host app's user by
:func:`check_same_origin`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection

from ...protocol import SCOPES
from ..problems import ApiError
from .binding import AgentBinding
from .keys import KEY_PREFIX, KeyStore

# What each kind of request needs, as the scopes that grant it (``admin`` grants everything).
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "kill": ("operator",),  # kill, revive
    "check": ("operator", "agent", "read"),  # check, active
    "read": ("operator", "read"),  # audit, interventions, counts
    "report": ("operator", "agent"),  # report interventions
    "keys": (),  # create, list, revoke API keys
    "metrics": ("metrics", "operator", "read"),  # GET /metrics (a metrics key reads nothing else)
    "drill": ("operator",),  # start a drill (it reaches every live instance of its target)
    "webhooks": (),  # register, list, test and remove webhooks; read their delivery logs
}


class Principal(BaseUser):
    """An authenticated caller: organization, user, scopes and, for a key, its id."""

    def __init__(
        self,
        organization_id: str,
        user_id: str,
        scopes: Iterable[str],
        *,
        key_id: str | None = None,
        method: str = "session",
        expires_at: datetime | None = None,
        session_id: str | None = None,
        agents: Iterable[str] = (),
    ) -> None:
        self.organization_id = organization_id
        self.user_id = user_id
        self.scopes = frozenset(scopes)
        self.key_id = key_id
        self.method = method
        # When the credential stops being valid (a session token's or cookie's expiry), if
        # known; and the console session it came from: an open change stream ends with either.
        self.expires_at = expires_at
        self.session_id = session_id
        self.agents = tuple(agents)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.actor

    @property
    def identity(self) -> str:
        return self.user_id

    @property
    def actor(self) -> str:
        """How this caller is named in records: the user, and the key it used if any."""
        return f"{self.user_id} (key {self.key_id})" if self.key_id else self.user_id

    def allows(self, permission: str) -> bool:
        """Whether the scopes grant a permission of :data:`PERMISSIONS`."""
        if "admin" in self.scopes:
            return True
        return any(scope in self.scopes for scope in PERMISSIONS[permission])

    @property
    def binding(self) -> AgentBinding | None:
        """The agents this caller may write for; ``None``: any (operator and admin)."""
        if self.scopes & {"admin", "operator"}:
            return None
        return AgentBinding(self.agents)

    def __repr__(self) -> str:
        return f"<Principal {self.actor} org={self.organization_id} scopes={sorted(self.scopes)}>"


def required_scope(permission: str) -> str:
    """The scope to name in a 403 for a permission."""
    granted = PERMISSIONS[permission]
    return granted[0] if granted else "admin"


SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def check_same_origin(conn: HTTPConnection) -> None:
    """Refuse (403) a state-changing request that a browser sent for another origin.

    ``Sec-Fetch-Site`` must be ``same-origin`` (or ``none``: typed by the user); without it,
    an ``Origin`` header must name this host. A request with neither did not come from a
    current browser's cross-site page (Go's ``CrossOriginProtection`` decides the same way).
    Another port of the same host is another origin.
    """
    if conn.scope["type"] != "http" or conn.scope["method"] in SAFE_METHODS:
        return
    site = conn.headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in ("same-origin", "none"):
            return
        sent = f"Sec-Fetch-Site: {site}"
    else:
        origin = conn.headers.get("origin")
        if origin is None:
            return
        host = conn.headers.get("host", "")
        if origin != "null" and host and urlsplit(origin).netloc.lower() == host.lower():
            return
        sent = f"Origin: {origin}"
    raise ApiError(
        "forbidden",
        f"a request made with a session cookie must come from this site's own pages; "
        f"the browser sent {sent}",
    )


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = conn.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyAuth(AuthenticationBackend):
    """``Authorization: Bearer ag_...``: a key of :class:`KeyStore`."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is None or not token.startswith(KEY_PREFIX):
            return None
        key = self.keys.cached(token)
        if key is None:
            from starlette.concurrency import run_in_threadpool

            key = await run_in_threadpool(self.keys.verify, token)
        if key is None:
            raise AuthenticationError("invalid or revoked API key")
        principal = Principal(
            key.organization_id,
            key.owner,
            key.scopes,
            key_id=key.id,
            method="api_key",
            agents=key.agents,
        )
        return AuthCredentials(sorted(principal.scopes)), principal


UserMapping = Callable[[Any], "tuple[str, str, Iterable[str]] | None"]


class HostUserAuth(AuthenticationBackend):
    """Reuse the user the host app's own ``AuthenticationMiddleware`` put in ``scope["user"]``.

    ``resolve(user)`` returns ``(organization_id, user_id, scopes)``, or ``None`` to treat the
    user as not signed in here.
    """

    def __init__(self, resolve: UserMapping) -> None:
        self.resolve = resolve

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.scope.get("user")
        if user is None or isinstance(user, Principal):
            return None
        if not getattr(user, "is_authenticated", False):
            return None
        resolved = self.resolve(user)
        if resolved is None:
            return None
        organization_id, user_id, scopes = resolved
        if not organization_id or not user_id:
            raise AuthenticationError("the signed-in user has no organization")
        check_same_origin(conn)  # the host's user most likely came from a cookie
        principal = Principal(organization_id, user_id, _known(scopes), method="host")
        return AuthCredentials(sorted(principal.scopes)), principal


def _known(scopes: Iterable[str]) -> list[str]:
    return [s for s in scopes if s in SCOPES]


async def authenticate(
    conn: HTTPConnection, backends: Sequence[AuthenticationBackend]
) -> Principal | None:
    """The first backend's principal; ``None`` if no credentials were offered.

    Raises :class:`AuthenticationError` for credentials that were offered but are invalid.
    """
    for backend in backends:
        result = await backend.authenticate(conn)
        if result is None:
            continue
        _, user = result
        if not isinstance(user, Principal):
            raise TypeError(f"{type(backend).__name__} must authenticate a Principal")
        return user
    return None
