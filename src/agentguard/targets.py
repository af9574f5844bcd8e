"""Kill targets: what can be killed, and validation of target input."""

from __future__ import annotations

from enum import Enum

from .errors import InvalidInputError

MAX_REASON_LENGTH = 2000
MAX_TARGET_ID_LENGTH = 256


class TargetType(str, Enum):
    """The kinds of thing a kill switch can stop."""

    AGENT = "agent"
    RUN = "run"
    MISSION = "mission"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value


TARGET_TYPES: tuple[str, ...] = tuple(t.value for t in TargetType)


def validate_target(target_type: object, target_id: object) -> tuple[str, str]:
    """Return ``(target_type, target_id)`` as plain strings, or raise naming the bad field."""
    if isinstance(target_type, TargetType):
        target_type = target_type.value
    if target_type not in TARGET_TYPES:
        raise InvalidInputError(
            "target_type", f"must be one of {', '.join(TARGET_TYPES)}; got {target_type!r}"
        )
    if not isinstance(target_id, str):
        raise InvalidInputError("target_id", f"must be a string; got {type(target_id).__name__}")
    if not target_id.strip():
        raise InvalidInputError("target_id", "must not be empty")
    _storable("target_id", target_id)
    if len(target_id) > MAX_TARGET_ID_LENGTH:
        raise InvalidInputError(
            "target_id", f"must be at most {MAX_TARGET_ID_LENGTH} characters; got {len(target_id)}"
        )
    return str(target_type), target_id


def validate_reason(reason: object) -> str | None:
    """Return the reason, or raise if it is not a string of at most 2000 characters."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise InvalidInputError("reason", f"must be a string; got {type(reason).__name__}")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInputError(
            "reason", f"must be at most {MAX_REASON_LENGTH} characters; got {len(reason)}"
        )
    _storable("reason", reason)
    return reason


def _storable(field: str, value: str) -> None:
    """Refuse text no database can store (as the HTTP API does): NUL, lone surrogates."""
    if "\x00" in value:
        raise InvalidInputError(field, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInputError(field, "must be valid Unicode text (no lone surrogates)") from None
