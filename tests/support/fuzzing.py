"""What the schemathesis runs (in process and live) share: the rules of valid input that a
JSON Schema cannot state, applied to a generated case before it is sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from agentguard.errors import InvalidInputError
from agentguard.server import series
from agentguard.targets import id_text_problem, parse_duration, validate_target


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def look_alike(case: Any) -> bool:
    """Whether a generated request holds a word mixing Latin, Greek and Cyrillic letters: a rule
    of ids that JSON Schema cannot state (their schema says it in words), so a "valid" case with
    one is not valid. (Reasons may mix scripts; a case with one is skipped all the same.)"""
    problems = (
        id_text_problem(text) or ""
        for part in (case.body, case.query, case.path_parameters)
        if part
        for text in strings(part)
    )
    return any("look alike" in problem for problem in problems)


def beyond_the_grid(case: Any) -> bool:
    """Whether a generated series query breaks the rules of windows and steps that JSON Schema
    cannot state (their descriptions say them in words): 1m to 31d, 10s to 1d in whole tens of
    seconds, and at most 2,880 steps in the window."""
    query = case.query or {}
    if not {"window", "step"} & set(query):
        return False
    try:
        window = series.seconds(str(query.get("window", "24h")))
        step = series.seconds(str(query.get("step", "5m")))
    except (KeyError, ValueError, IndexError):
        return False  # not a duration at all: the schema refuses it
    return bool(
        series.window_problem(window)
        or series.step_problem(step)
        or series.grid_problem(window, step)
    )


def reported_now(body: Any) -> None:
    """Valid reported times are relative to the server's clock, which no schema can say: a
    generated ``occurred_at`` (or AgentSentinel ``timestamp``, of a record or a ledger entry)
    is set to now (tests/server/auth/test_trust.py tests the window)."""
    if not isinstance(body, dict):
        return
    now = datetime.now(timezone.utc).isoformat()
    items = [body]
    for key in ("interventions", "entries"):
        if isinstance(body.get(key), list):
            items += body[key]
    for item in items:
        for name in ("occurred_at", "timestamp"):
            if isinstance(item, dict) and name in item:
                item[name] = now


def kill_expiry_now(body: Any) -> None:
    """A time-limited kill's ``expires_at`` must be within 366 days of the server's clock and
    its ``duration`` more than 0 and at most 366 days, and not both are given, which no schema
    can say: a generated expiry is set to an hour from now, an out-of-range duration to 1h."""
    if not isinstance(body, dict):
        return
    if body.get("expires_at") is not None:
        body["expires_at"] = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        body.pop("duration", None)
    duration = body.get("duration")
    if isinstance(duration, str):
        try:
            parse_duration("duration", duration)
        except InvalidInputError:
            body["duration"] = "1h"


DRILL_WAIT = 0.2  # seconds a fuzzed drill may wait for answers


def quick_drill(path: str, body: Any) -> None:
    """A drill waits up to its ``timeout`` (at most 60 s) for live instances that never answer
    (the fuzzer's): a generated one is cut to DRILL_WAIT, still a valid timeout."""
    if path.endswith("/drills") and isinstance(body, dict):
        timeout = body.get("timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            body["timeout"] = min(timeout, DRILL_WAIT)


FUZZ_ORGANIZATION = "org_fuzz"  # the organization of the fuzzing runs' keys


def target_rules(case: Any) -> None:
    """An ``organization`` target must name the caller's organization, and a ``selector``
    target must be an equality selector, which no schema says: a generated organization target
    is set to the fuzzing organization, a selector that is not one to ``env=fuzz``."""
    for part in (case.body, case.query):
        if not isinstance(part, dict):
            continue
        kind = part.get("target_type")
        if kind == "organization" and "target_id" in part:
            part["target_id"] = FUZZ_ORGANIZATION
        elif kind == "selector" and "target_id" in part:
            try:
                validate_target("selector", part["target_id"])
            except (InvalidInputError, TypeError):
                part["target_id"] = "env=fuzz"
