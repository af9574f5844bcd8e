"""Reading request input: query strings, path parameters, and JSON bodies of bounded size."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .problems import ApiError, from_validation

MAX_BODY_SIZE = 1024 * 1024  # 1 MiB

M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M], request: Request) -> M:
    """Validate the query string against ``model`` (unknown parameters are ignored)."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise from_validation(exc) from None


def parse_path(model: type[M], request: Request) -> M:
    """Validate the path parameters against ``model``."""
    try:
        return model.model_validate(request.path_params)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def parse_body(model: type[M], request: Request, *, max_size: int = MAX_BODY_SIZE) -> M:
    """Read at most ``max_size`` bytes of JSON and validate it; 413 past that, before reading on."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > max_size
        except ValueError:
            raise ApiError("malformed_json", "Content-Length is not a number") from None
        if too_large:
            raise _too_large(max_size)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_size:
            raise _too_large(max_size)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError("malformed_json", "the body is empty; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _too_large(max_size: int) -> ApiError:
    return ApiError("payload_too_large", f"the body is larger than {max_size} bytes")


def dump(model: BaseModel) -> bytes:
    """A response model as JSON bytes."""
    return model.model_dump_json().encode()


def as_public(model: type[M], record: Any) -> M:
    """Convert a core record to its public schema."""
    return model.model_validate(record.model_dump())
