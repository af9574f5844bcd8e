"""Checkpoints: small JSON states an agent stores to resume where it stopped."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidInputError

MAX_CHECKPOINT_BYTES = 256 * 1024
MAX_KEY_LENGTH = 256
# Keys travel in URL paths (``/checkpoints/{key}``): no "/", no spaces, no leading dot (so never
# "." or ".."). Every store checks this one rule, so a key stored in-process reads back over HTTP.
CHECKPOINT_KEY_PATTERN = r"^[A-Za-z0-9_:@=+~-][A-Za-z0-9._:@=+~-]{0,255}$"
CHECKPOINT_KEY_RULE = (
    "may contain only letters, digits and . _ : @ = + ~ - (no spaces or slashes), "
    "and must not start with a dot"
)
_KEY = re.compile(CHECKPOINT_KEY_PATTERN)


def validate_checkpoint_key(key: object) -> str:
    """Return the key, or raise naming it if it is not 1 to 256 characters of the key rule."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidInputError("key", f"must be a non-empty string; got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            "key", f"must be at most {MAX_KEY_LENGTH} characters; got {len(key)}"
        )
    if not _KEY.fullmatch(key):
        raise InvalidInputError("key", f"{CHECKPOINT_KEY_RULE}; got {key!r}")
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
