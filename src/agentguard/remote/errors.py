"""What the server's error answers mean on the client: agentguard's own errors.

:func:`raise_for_status` maps 401 to :class:`AuthenticationError`, 403 to
:class:`PermissionDeniedError`, 400/413/422 to :class:`InvalidInputError` naming the field,
other 404 and 409 to :class:`NotFoundError` and :class:`ConflictError`, and 503 while the
server's database is away to :class:`DatabaseUnavailableError`.
"""

from __future__ import annotations

from typing import Any

import httpx

from .._version import __version__
from ..errors import (
    AgentGuardError,
    AuthenticationError,
    InvalidInputError,
    PermissionDeniedError,
)


class NotFoundError(AgentGuardError):
    """The server has no such record (HTTP 404): an unknown agent or API key."""


class ConflictError(AgentGuardError):
    """The request conflicts with the current state (HTTP 409), e.g. a key already revoked."""


class ServerUnreachableError(AgentGuardError):
    """No answer from the server; ``url`` is the URL tried."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the agentguard server at {url}: {reason}")
        self.url = url
        self.reason = reason


class DatabaseUnavailableError(AgentGuardError):
    """The server is up but its database is not (HTTP 503): retry after ``retry_after`` s."""

    def __init__(self, url: str, retry_after: float | None = None) -> None:
        wait = f"retry in {retry_after:g} s" if retry_after else "retry in a few seconds"
        super().__init__(
            f"{url}: the server's database is unavailable (HTTP 503); {wait}. The server keeps "
            "answering /check and the change stream from memory meanwhile"
        )
        self.url = url
        self.retry_after = retry_after


def raise_for_status(response: httpx.Response, url: str) -> None:
    """Raise the agentguard error an HTTP answer stands for (nothing for 2xx and 3xx)."""
    status = response.status_code
    if status < 400:
        return
    if status == 503 and body_of(response).get("error") == "database_unavailable":
        raise DatabaseUnavailableError(url, _retry_after(response))
    if status >= 500 and not is_ours(response):  # the server (or a proxy before it) failed
        raise AgentGuardError(
            f"{url} answered HTTP {status} {response.reason_phrase}: the server failed "
            "(its log says why)"
        )
    if not is_ours(response):
        raise AgentGuardError(
            f"{url} answered HTTP {status} {response.reason_phrase}, not an agentguard error; "
            "is --url the address of an agentguard server (with its mount path)?"
        )
    body = body_of(response)
    detail: str = body["detail"]
    if status == 404 and no_such_route(response):
        raise AgentGuardError(
            f"{url}: no such endpoint (HTTP 404); is --url the server with its mount path, "
            f"and is the server as recent as this client (agentguard {__version__})?"
        )
    if status == 401:
        raise AuthenticationError(detail)
    if status == 403:
        raise PermissionDeniedError(detail)
    if status in (400, 413, 422):
        field = body.get("field") or "body"
        message = detail.removeprefix(f"{field}: ")
        raise InvalidInputError(field, message)
    if status == 404:
        raise NotFoundError(detail)
    if status == 409:
        raise ConflictError(detail)
    raise AgentGuardError(f"{url} answered HTTP {status}: {detail}")


def unreachable(exc: httpx.TransportError, url: str) -> ServerUnreachableError:
    """The error for a request that got no answer; ``url`` when the request is unknown."""
    if has_request(exc):
        url = str(exc.request.url)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        reason = "connection refused (is the server running? check --url / AGENTGUARD_URL)"
    return ServerUnreachableError(url, reason)


def has_request(exc: httpx.RequestError) -> bool:
    """Whether httpx attached the request to ``exc``."""
    try:
        exc.request  # noqa: B018 - raises RuntimeError when unset
    except RuntimeError:
        return False
    return True


def body_of(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}``."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def is_ours(response: httpx.Response) -> bool:
    """Whether an error answer has agentguard's error shape (not some other server's page)."""
    body = body_of(response)
    return isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)


def no_such_route(response: httpx.Response) -> bool:
    """Whether a 404 is the router's (no such path) rather than an endpoint's (no such record)."""
    return body_of(response).get("detail") == "Not Found"


def _retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` seconds of an answer (not the HTTP-date form), if any."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None
