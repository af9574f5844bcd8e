"""Generated webhook registrations made valid where no schema can say what valid is."""

from __future__ import annotations

from typing import Any

FUZZ_URL = "https://hooks.example.com/fuzz"


def registrable(body: Any) -> None:
    """Whether a URL's host is public, and whether it parses past the pattern (a port in
    range, a bracketed address closed), is the server's call: a generated ``url`` becomes a
    public one. A routing key goes with the pagerduty format and only with it (a rule across
    two fields that the document states in words)."""
    if not isinstance(body, dict) or "events" not in body or "url" not in body:
        return
    body["url"] = FUZZ_URL
    if body.get("format") == "pagerduty":
        if not isinstance(body.get("routing_key"), str):
            body["routing_key"] = "R0fuzz"
    else:
        body.pop("routing_key", None)
