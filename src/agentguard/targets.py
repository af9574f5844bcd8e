"""Kill targets: what can be killed, and validation of target input."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from enum import Enum

from .errors import InvalidInputError

MAX_REASON_LENGTH = 2000
MAX_TARGET_ID_LENGTH = 256
MAX_KILL_DURATION = timedelta(days=366)  # the longest a time-limited kill may last
EXPIRY_ACTOR = "expiry"  # who revives a time-limited kill when it expires

# Characters an id must not contain: controls (Cc), format characters (Cf: zero-width spaces
# and joiners, bidi marks, embeddings, overrides and isolates, tags), line and paragraph
# separators (Zl, Zp), and the rest of Unicode's default-ignorable code points (variation
# selectors, Hangul fillers): all render as nothing, or reorder the text around them.
HIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x034F, 0x034F),
    (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


def _class_member(code: int) -> str:
    # \uXXXX reads the same in Python's re, pydantic's Rust regex and ECMA-262 (JSON Schema);
    # beyond the BMP the character itself is the one spelling all three share.
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


# The inside of a regex character class matching every hidden character.
HIDDEN_CLASS = "".join(
    _class_member(a) if a == b else f"{_class_member(a)}-{_class_member(b)}"
    for a, b in HIDDEN_RANGES
)
_HIDDEN = re.compile(f"[{HIDDEN_CLASS}]")

# Look-alikes: letters of these scripts are confused with one another (Cyrillic "е" and Latin
# "e" look the same), so a word of an id (a run of letters) may use letters of at most one of
# them: "еmail-campaign" with a Cyrillic "е" is refused, "Агент GPT" and "注文-bot" are fine.
CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")


# Selectors (target type ``selector``): Kubernetes-style equality selectors over a guard's
# labels and the call's own keys; agentguard.selectors matches them.
CALL_KEYS = ("agent", "run", "mission", "tool")  # a call's own keys, in a selector
_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
# A label key: a name, optionally behind a DNS-style prefix and a slash ("team", "acme.io/team").
LABEL_KEY = re.compile(rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_NAME}$")
LABEL_VALUE = re.compile(rf"^{_NAME}$")
LABEL_RULE = "1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"

Pairs = tuple[tuple[str, str], ...]


class TargetType(str, Enum):
    """The kinds of thing a kill switch can stop."""

    AGENT = "agent"
    RUN = "run"
    MISSION = "mission"
    TOOL = "tool"
    ORGANIZATION = "organization"  # every guarded call of the organization (target id: its id)
    SELECTOR = "selector"  # the calls a label selector selects (target id: the selector)

    def __str__(self) -> str:
        return self.value


TARGET_TYPES: tuple[str, ...] = tuple(t.value for t in TargetType)


def validate_target(
    target_type: object, target_id: object, *, existing: bool = False
) -> tuple[str, str]:
    """Return ``(target_type, target_id)`` as plain strings, or raise naming the bad field.

    ``existing``: a target that may have been killed before ids had to be visible text (to
    revive it): any id a database stores, 1 to 256 characters, not all spaces.
    """
    if isinstance(target_type, TargetType):
        target_type = target_type.value
    if target_type not in TARGET_TYPES:
        raise InvalidInputError(
            "target_type", f"must be one of {', '.join(TARGET_TYPES)}; got {target_type!r}"
        )
    if not isinstance(target_id, str):
        raise InvalidInputError("target_id", f"must be a string; got {type(target_id).__name__}")
    if target_type == TargetType.SELECTOR.value:  # one canonical string per selector
        _stored_id("target_id", target_id)
        target_id = canonical(parse_selector(target_id))
        if len(target_id) > MAX_TARGET_ID_LENGTH:
            raise InvalidInputError(
                "target_id",
                f"must be at most {MAX_TARGET_ID_LENGTH} characters; got {len(target_id)}",
            )
        return str(target_type), target_id
    if existing:
        return str(target_type), _stored_id("target_id", target_id)
    return str(target_type), validate_id("target_id", target_id)


def check_organization_target(organization_id: str, target_type: str, target_id: str) -> None:
    """An organization-wide stop names the organization it stops: its own, no other."""
    if target_type == TargetType.ORGANIZATION.value and target_id != organization_id:
        raise InvalidInputError(
            "target_id",
            f"an organization target must be this organization's id, {organization_id!r}; "
            f"got {target_id!r}",
        )


def validate_id(field: str, value: object) -> str:
    """Return an id (of a target, agent, run, mission, instance...), or raise naming ``field``.

    An id is visible text: 1 to 256 characters, at least one of them not a space, none of them
    hidden (see :data:`HIDDEN_RANGES`), and no word mixing Latin, Greek and Cyrillic letters.
    """
    text = _stored_id(field, value)
    problem = id_text_problem(text)
    if problem is not None:
        raise InvalidInputError(field, problem)
    return text


def _stored_id(field: str, value: object) -> str:
    """An id as stored: a string of 1 to 256 characters, not all spaces, storable."""
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string; got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(field, "must not be empty")
    _storable(field, value)
    if len(value) > MAX_TARGET_ID_LENGTH:
        raise InvalidInputError(
            field, f"must be at most {MAX_TARGET_ID_LENGTH} characters; got {len(value)}"
        )
    return value


def id_text_problem(value: str) -> str | None:
    """What makes ``value`` unfit to be an id (hidden characters, mixed scripts), or ``None``."""
    hidden = _HIDDEN.search(value)
    if hidden is not None:
        char = hidden.group()
        name = unicodedata.name(char, unicodedata.category(char))
        return (
            "must not contain control, format or invisible characters; "
            f"found U+{ord(char):04X} {name} at position {hidden.start()}"
        )
    if value.isascii():
        return None
    scripts: dict[str, str] = {}  # of the current word: script -> its first letter
    word_start = 0
    for i, char in enumerate(value):
        if not char.isalpha():
            scripts.clear()
            word_start = i + 1
            continue
        names = unicodedata.name(char, "").split()
        script = next((n for n in names if n in CONFUSABLE_SCRIPTS), None)
        if script is None:
            continue
        scripts.setdefault(script, char)
        if len(scripts) > 1:
            end = next((j for j in range(i, len(value)) if not value[j].isalpha()), len(value))
            found = ", ".join(f"{s.title()} {c!r} (U+{ord(c):04X})" for s, c in scripts.items())
            return (
                "must not mix Latin, Greek and Cyrillic letters in a word, as they look alike; "
                f"{value[word_start:end]!r} has {found}"
            )
    return None


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


def require_reason(reason: str | None, what: str = "kills") -> str:
    """The reason of a kill (or of ``what``: revives, approvals) on a server that refuses
    them without one (``require_reason``)."""
    if reason is None or not reason.strip():
        raise InvalidInputError("reason", f"required: this server refuses {what} without a reason")
    return reason


def _storable(field: str, value: str) -> None:
    """Refuse text no database can store (as the HTTP API does): NUL, lone surrogates."""
    if "\x00" in value:
        raise InvalidInputError(field, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInputError(field, "must be valid Unicode text (no lone surrogates)") from None


# "90s", "15m", "1h", "1h30m", "2d": whole numbers of days, hours, minutes and seconds (the
# same pattern in Python, pydantic's Rust regex and JSON Schema; empty is refused after it).
KILL_DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION = re.compile(KILL_DURATION_PATTERN)
DURATION_RULE = (
    'a number of seconds, or days, hours, minutes and seconds such as "90s", "15m", "1h30m", "2d"'
)


def parse_duration(field: str, value: object) -> timedelta:
    """A duration from a number of seconds, a ``timedelta`` or text such as ``"1h30m"``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidInputError(field, f"must be a finite number of seconds; got {value!r}")
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.strip().lower()) if value.strip() else None
        if match is None or not any(match.groups()):
            raise InvalidInputError(field, f"must be {DURATION_RULE}; got {value!r}")
        days, hours, minutes, secs = (int(g[:-1]) if g else 0 for g in match.groups())
        seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    else:
        raise InvalidInputError(field, f"must be {DURATION_RULE}; got {type(value).__name__}")
    if seconds <= 0:
        raise InvalidInputError(field, "must be more than 0 seconds")
    if seconds > MAX_KILL_DURATION.total_seconds():
        raise InvalidInputError(field, f"must be at most {MAX_KILL_DURATION.days} days")
    return timedelta(seconds=seconds)


def validate_expiry(expires_at: object, duration: object, now: datetime) -> datetime | None:
    """When a time-limited kill expires (UTC), from ``expires_at`` or ``duration``; ``None``:
    it lasts until revived. Raises naming the field: both given, not in the future, too far."""
    if expires_at is not None and duration is not None:
        raise InvalidInputError("duration", "give expires_at or duration, not both")
    if duration is not None:
        return now + parse_duration("duration", duration)
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise InvalidInputError(
            "expires_at", f"must be a date-time; got {type(expires_at).__name__}"
        )
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=timezone.utc)
    expires_at = expires_at.astimezone(timezone.utc)
    if expires_at <= now:
        raise InvalidInputError("expires_at", "must be in the future")
    if expires_at - now > MAX_KILL_DURATION:
        raise InvalidInputError(
            "expires_at", f"must be at most {MAX_KILL_DURATION.days} days from now"
        )
    return expires_at


def parse_selector(text: object, field: str = "target_id") -> Pairs:
    """The pairs of an equality selector (``env=prod,team=growth``), sorted by key."""
    if not isinstance(text, str):
        raise InvalidInputError(field, f"must be a string; got {type(text).__name__}")
    pairs: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise InvalidInputError(
                field, "a selector is key=value pairs separated by commas, none empty"
            )
        if "!=" in part:
            raise InvalidInputError(field, f"only equality (key=value) is supported; got {part!r}")
        key, eq, value = part.partition("==" if "==" in part else "=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise InvalidInputError(field, f"each pair must be key=value; got {part!r}")
        if key in CALL_KEYS:
            if "," in value or "=" in value:
                raise InvalidInputError(field, f"{key}: a value must not hold ',' or '='")
            problem = id_text_problem(value)
            if problem is not None:
                raise InvalidInputError(field, f"{key}: {problem}")
        elif not LABEL_KEY.match(key):
            raise InvalidInputError(field, f"label key {key!r}: must be {LABEL_RULE}")
        elif not LABEL_VALUE.match(value):
            raise InvalidInputError(field, f"label {key}: value {value!r} must be {LABEL_RULE}")
        if pairs.get(key, value) != value:
            raise InvalidInputError(field, f"{key} is given two values: {pairs[key]!r}, {value!r}")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def canonical(pairs: Pairs) -> str:
    """The one string of a selector: its pairs sorted by key, ``key=value`` joined by commas."""
    return ",".join(f"{k}={v}" for k, v in pairs)
