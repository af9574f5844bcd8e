"""HTTP errors in one shape: ``{error, detail, field?, required_scope?, kill_switch?}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import AlreadyKilledError, InvalidInputError, NotKilledError
from .auth.binding import AgentNotAllowedError
from .schemas import PATTERN_RULES, ErrorResponse, KillSwitchPublic
from .store.database import RETRY_AFTER, Outage, is_unavailable
from .store.drills import DrillNotFoundError
from .store.keys import KeyNotFoundError, KeyRevokedError
from .store.revives import (
    ApprovalRefusedError,
    ReviveRequestClosedError,
    ReviveRequestExistsError,
    ReviveRequestNotFoundError,
)
from .store.webhooks import WebhookNotFoundError

# The status of each error code, and the sentence OpenAPI uses for it.
STATUS: dict[str, int] = {
    "malformed_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "database_unavailable": 503,
    "too_many_requests": 429,
}
DESCRIPTIONS: dict[int, str] = {
    400: "The body is not valid JSON, or repeats a key",
    401: "Missing or invalid credentials",
    403: "The credential lacks the required scope",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "The body is larger than 1 MiB",
    415: "The body is not sent as Content-Type: application/json",
    422: "Invalid input; `field` names the field at fault",
    503: "The server's database is unavailable; retry after `Retry-After` seconds",
    429: "Too many open change streams; retry after `Retry-After` seconds",
}


class ApiError(Exception):
    """An error answered with :class:`ErrorResponse`."""

    def __init__(
        self,
        error: str,
        detail: str,
        *,
        field: str | None = None,
        required_scope: str | None = None,
        kill_switch: KillSwitchPublic | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = STATUS[error]
        self.body = ErrorResponse(
            error=error,
            detail=detail,
            field=field,
            required_scope=required_scope,  # type: ignore[arg-type]
            kill_switch=kill_switch,
        )
        self.headers = headers

    def response(self) -> Response:
        # Optional members are left out when unset; the kill switch inside keeps its nulls.
        unset = {
            k for k in ("field", "required_scope", "kill_switch") if getattr(self.body, k) is None
        }
        return Response(
            self.body.model_dump_json(exclude=unset),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def from_exception(exc: Exception, outage: Outage | None = None) -> ApiError | None:
    """The API error for a domain exception, or ``None`` if it is a bug.

    An unreachable database is a 503 with ``Retry-After``, told to ``outage`` (which logs it
    once), not a 500 with a traceback.
    """
    if isinstance(exc, ApiError):
        return exc
    if is_unavailable(exc):
        if outage is not None:
            outage.began(exc)
        return database_unavailable(exc)
    if isinstance(exc, InvalidInputError):
        return ApiError("validation_error", str(exc), field=exc.field)
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, AlreadyKilledError):
        ks = KillSwitchPublic.model_validate(exc.kill_switch.model_dump())
        return ApiError("conflict", str(exc), kill_switch=ks)
    if isinstance(exc, NotKilledError):
        return ApiError("not_found", f"{exc}: no active kill switch to revive")
    if isinstance(exc, AgentNotAllowedError):
        return ApiError("forbidden", str(exc), field=exc.field)
    if isinstance(exc, KeyNotFoundError):
        return ApiError("not_found", str(exc), field="key_id")
    if isinstance(exc, KeyRevokedError):
        return ApiError("conflict", str(exc), field="key_id")
    if isinstance(exc, ReviveRequestNotFoundError):
        return ApiError("not_found", str(exc), field="request_id")
    if isinstance(exc, (ReviveRequestClosedError, ReviveRequestExistsError)):
        return ApiError("conflict", str(exc))
    if isinstance(exc, ApprovalRefusedError):
        return ApiError("forbidden", str(exc))
    if isinstance(exc, WebhookNotFoundError):
        return ApiError("not_found", str(exc), field="webhook_id")
    if isinstance(exc, DrillNotFoundError):
        return ApiError("not_found", str(exc), field="drill_id")
    return None


def database_unavailable(exc: BaseException) -> ApiError:
    """The 503 of a request that needed the database while it is unreachable.

    Why it is unreachable (hosts, ports) goes to the server's log, not to the client.
    """
    return ApiError(
        "database_unavailable",
        "the server's database is unavailable; retry in a few seconds",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def from_validation(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> ApiError:
    """A 422 naming the first invalid field (or 400 for a body that is not JSON)."""
    first = exc.errors(include_url=False)[0]
    loc = prefix + tuple(first["loc"])
    if first["type"] == "json_invalid":
        return ApiError("malformed_json", f"the body is not valid JSON: {first['msg']}")
    field = ".".join(str(part) for part in loc) or "body"
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required"
    elif first["type"] == "model_type":
        message = "must be a JSON object"
    elif first["type"] == "string_pattern_mismatch":
        message = _pattern_rule(str(first.get("ctx", {}).get("pattern", "")))
    elif first["type"] == "value_error":  # our own validators' words, without pydantic's prefix
        message = str(first.get("ctx", {}).get("error", first["msg"]))
    else:
        message = first["msg"]
    return ApiError("validation_error", f"{field}: {message}", field=field)


def _pattern_rule(pattern: str) -> str:
    """What a pattern asks for in words: a regex tells most callers nothing."""
    return PATTERN_RULES.get(pattern, "contains characters that are not allowed here")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (unknown path, wrong method) in our error shape."""
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if error is None:
        body = ErrorResponse(error="http_error", detail=str(exc.detail))
        return Response(
            body.model_dump_json(exclude_none=True),
            exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )
    detail = str(exc.detail)
    allow = (exc.headers or {}).get("Allow")
    if exc.status_code == 405 and allow:
        detail = f"{request.method} is not allowed here; use {allow}"
    return ApiError(error, detail, headers=exc.headers).response()
