"""Clerk session tokens: the ``__session`` cookie or a Bearer JWT, verified with a PEM key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import jwt
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection

from .keys import KEY_PREFIX, validate_scopes
from .principal import Principal, bearer_token, check_same_origin

SESSION_COOKIE = "__session"


class ClerkAuth(AuthenticationBackend):
    """Verify a Clerk session JWT (RS256) against the instance's PEM public key.

    The organization comes from the v2 ``o.id`` claim or the v1 ``org_id`` claim, the user from
    ``sub`` (which must not be empty). An organization admin (role ``admin`` / ``org:admin``)
    gets ``admin_scopes``, every other member ``member_scopes``. ``authorized_parties`` lists
    the allowed ``azp`` origins, as Clerk's own SDKs check them: when given, a token must name
    one of them. ``issuer`` (the instance's Frontend API URL), when given, must be the
    token's ``iss``. A token read from the cookie is accepted for a state-changing request
    only from this origin (see :func:`~agentguard.server.auth.principal.check_same_origin`).
    """

    def __init__(
        self,
        public_key: str | bytes,
        *,
        authorized_parties: Iterable[str] | None = None,
        member_scopes: Iterable[str] = ("operator",),
        admin_scopes: Iterable[str] = ("admin",),
        leeway: float = 5.0,
        issuer: str | None = None,
    ) -> None:
        self.public_key = public_key
        self.issuer = issuer or None
        self.authorized_parties = frozenset(authorized_parties or ())
        self.member_scopes = validate_scopes(member_scopes)
        self.admin_scopes = validate_scopes(admin_scopes)
        self.leeway = leeway

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = bearer_token(conn)
        if token is not None and token.startswith(KEY_PREFIX):
            return None  # an API key: not ours
        from_cookie = token is None
        if token is None:
            token = conn.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        principal = self.verify(token)
        if from_cookie:
            check_same_origin(conn)
        return AuthCredentials(sorted(principal.scopes)), principal

    def verify(self, token: str) -> Principal:
        """The principal of a valid session token; raises ``AuthenticationError`` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["exp", "sub"], "verify_aud": False},
                leeway=self.leeway,
                issuer=self.issuer,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("session token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid session token: {exc}") from None
        azp = claims.get("azp")
        if self.authorized_parties and azp not in self.authorized_parties:
            party = azp or "none named (no azp claim)"
            raise AuthenticationError(f"session token issued for an unauthorized party: {party}")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.strip():
            raise AuthenticationError("invalid session token: the subject (sub) is empty")
        organization_id, role = _organization(claims)
        if not organization_id:
            raise AuthenticationError("session has no active organization")
        user_id = sub
        is_admin = role in ("admin", "org:admin")
        scopes = self.admin_scopes if is_admin else self.member_scopes
        # Accepted until exp (and the leeway): a stream opened with it ends then.
        try:
            expires = datetime.fromtimestamp(float(claims["exp"]) + self.leeway, timezone.utc)
        except (OverflowError, ValueError, OSError):  # beyond any date: no end to keep
            expires = None
        return Principal(organization_id, user_id, scopes, method="clerk", expires_at=expires)


def _organization(claims: Mapping[str, Any]) -> tuple[str | None, str | None]:
    v2 = claims.get("o")
    if isinstance(v2, Mapping) and v2.get("id"):
        return str(v2["id"]), _role(v2.get("rol"))
    org_id = claims.get("org_id")
    if org_id:
        return str(org_id), _role(claims.get("org_role"))
    return None, None


def _role(value: Any) -> str | None:
    return str(value) if value else None
