"""Checkpoints: small JSON states an agent stores to resume where it stopped."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInputError

MAX_CHECKPOINT_BYTES = 256 * 1024
MAX_KEY_LENGTH = 256


def validate_checkpoint_key(key: object) -> str:
    """Return the key, or raise naming it if it is not a non-empty string of <= 256 chars."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidInputError("key", f"must be a non-empty string; got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            "key", f"must be at most {MAX_KEY_LENGTH} characters; got {len(key)}"
        )
    return key


def encode_checkpoint(key: str, state: Any) -> str:
    """Serialise a checkpoint, refusing non-JSON values and states over 256 KiB."""
    validate_checkpoint_key(key)
    try:
        encoded = json.dumps(state, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("state", f"must be JSON-serialisable: {exc}") from exc
    size = len(encoded.encode())
    if size > MAX_CHECKPOINT_BYTES:
        raise InvalidInputError(
            "state",
            f"is {size:,} bytes as JSON; checkpoints are limited to {MAX_CHECKPOINT_BYTES:,}",
        )
    return encoded
