"""Who sends a request, and whether their credential grants what the request needs."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.authentication import AuthenticationBackend, AuthenticationError
from starlette.requests import Request

from ..auth.principal import Principal, authenticate, required_scope
from ..problems import ApiError
from ..store.feed import ChangeFeed


class Authenticator:
    """The server's authentication backends, tried in order on an up-to-date key store."""

    def __init__(self, backends: Sequence[AuthenticationBackend], feed: ChangeFeed) -> None:
        self.backends = backends
        self._feed = feed

    async def identify(self, request: Request) -> Principal | None:
        """The request's principal, if it sent credentials; ``AuthenticationError`` if bad."""
        self._feed.refresh()  # another process may have revoked a key or killed a target
        return await authenticate(request, self.backends)

    async def require(self, request: Request, permission: str) -> Principal:
        """The request's principal if it grants ``permission``; else a 401 or 403 ``ApiError``."""
        try:
            principal = await self.identify(request)
        except AuthenticationError as exc:
            raise _unauthorized(str(exc) or "invalid credentials") from None
        if principal is None:
            raise _unauthorized(
                "missing credentials: send Authorization: Bearer <API key> or a session"
            )
        if not principal.allows(permission):
            scope = required_scope(permission)
            also = "" if scope == "admin" else " (or admin)"
            raise ApiError(
                "forbidden",
                f"this request needs the {scope!r} scope{also}; the credential has "
                f"{', '.join(sorted(principal.scopes)) or 'no scopes'}",
                required_scope=scope,
            )
        return principal


def _unauthorized(detail: str) -> ApiError:
    return ApiError("unauthorized", detail, headers={"www-authenticate": "Bearer"})
