"""Reading request input: query strings, path parameters, and JSON bodies of bounded size.

A body must be sent as ``Content-Type: application/json`` (415 otherwise: a cross-site form
can send ``text/plain`` but not JSON) and must not repeat a key in any object (400: a proxy
reading the first of two equal keys would see another request than this server).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .problems import ApiError, from_validation

MAX_BODY_SIZE = 1024 * 1024  # 1 MiB
JSON_MEDIA_TYPE = "application/json"

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


def parse_headers(model: type[M], request: Request) -> M:
    """Validate the headers ``model`` names (by its fields' aliases) against it.

    A header sent more than once is refused (422 naming it): the first and the last value
    could be read by a proxy and by this server as different callers.
    """
    values: dict[str, str] = {}
    for name, info in model.model_fields.items():
        header = info.alias or name
        sent = request.headers.getlist(header)
        if len(sent) > 1:
            raise ApiError(
                "validation_error",
                f"{header}: sent more than once; send it once",
                field=header,
            )
        if sent:
            values[header] = sent[0]
    try:
        return model.model_validate(values)
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
    require_json(request)
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
    repeated = repeated_key(body)
    if repeated is not None:
        raise ApiError(
            "malformed_json",
            f"{repeated}: appears more than once in its JSON object; send each key once",
            field=repeated,
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


def require_json(request: Request) -> None:
    """Refuse (415) a body not sent as ``application/json`` (parameters such as charset aside)."""
    given = request.headers.get("content-type", "")
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        got = f"got {media_type!r}" if media_type else "none was sent"
        raise ApiError(
            "unsupported_media_type",
            f"Content-Type must be {JSON_MEDIA_TYPE} for a JSON body; {got}",
        )


class _Repeated(dict[str, Any]):
    """A JSON object that repeated ``key`` (the last value kept, as ``json`` does)."""

    key = ""


def repeated_key(body: bytes) -> str | None:
    """The dotted path of the first key a JSON object of ``body`` repeats, if any.

    ``None`` too when ``body`` is not JSON: the model's parser then says what is wrong.
    """
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        found = True
        repeated = _Repeated(obj)
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                repeated.key = k
                break
            seen.add(k)
        return repeated

    try:
        value = json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # depth first, in document order
        node, path = stack.pop()
        if isinstance(node, _Repeated):
            return f"{path}.{node.key}" if path else node.key
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = [(str(i), v) for i, v in enumerate(node)]
        else:
            continue
        for k, v in reversed(items):
            stack.append((v, f"{path}.{k}" if path else k))
    return None


def _too_large(max_size: int) -> ApiError:
    return ApiError("payload_too_large", f"the body is larger than {max_size} bytes")


def dump(model: BaseModel) -> bytes:
    """A response model as JSON bytes."""
    return model.model_dump_json().encode()


def as_public(model: type[M], record: Any) -> M:
    """Convert a core record to its public schema."""
    return model.model_validate(record.model_dump())
