"""What several commands share: connection and paging options, exit codes, time parsing."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ..targets import TARGET_TYPES
from .errors import API_KEY_ENV, connect

DEFAULT_DATABASE_URL = "sqlite:///agentguard.db"
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "AGENTGUARD_URL"
DATABASE_URL_ENV = "AGENTGUARD_DATABASE_URL"

database_option = click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="sqlite:///path or postgresql://... (env AGENTGUARD_DATABASE_URL).",
)
org_option = click.option(
    "--org", "organization_id", default="default", show_default=True, help="Organization id."
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table."
)
target_type_argument = click.argument(
    "target_type", metavar="TYPE", type=click.Choice(TARGET_TYPES)
)
limit_option = click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(1, 1000), help="Rows to show."
)
skip_option = click.option(
    "--skip", default=0, show_default=True, type=click.IntRange(0), help="Rows to skip."
)


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--api-key``, also read from AGENTGUARD_URL and AGENTGUARD_API_KEY."""
    f = click.option(
        "--api-key",
        envvar=API_KEY_ENV,
        metavar="KEY",
        help="API key, ag_... (env AGENTGUARD_API_KEY).",
    )(f)
    return click.option(
        "--url",
        envvar=URL_ENV,
        default=DEFAULT_URL,
        show_default=True,
        help="The server, with its mount path if mounted (env AGENTGUARD_URL).",
    )(f)


def remote(f: Callable[..., None]) -> Callable[..., None]:
    """Add the connection options and pass the command a connected :class:`Client`."""

    @functools.wraps(f)
    def run(*args: Any, url: str, api_key: str | None, **kwargs: Any) -> None:
        with connect(url, api_key) as client:
            f(*args, client=client, **kwargs)

    return connection_options(run)


class Seconds(click.FloatRange):
    """A number of seconds in a range; unlike ``click.FloatRange``, never NaN or infinite."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


# Hand-written rather than a duration library's: the CLI takes exactly these few units, and
# its error messages name them.
_DURATION = re.compile(r"^(\d+)\s*(s|m|min|h|d)$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int | None:
    """``15m``, ``2h``, ``7d`` in seconds; ``None`` if ``text`` is not such a duration."""
    match = _DURATION.match(text.strip())
    return None if match is None else int(match[1]) * _SECONDS[match[2]]


def seconds_ago(seconds: int, value: str) -> datetime:
    """That many seconds before now; a usage error if that is before the year 1."""
    try:
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    except OverflowError:
        raise click.BadParameter(f"{value!r} reaches back before the year 1") from None


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A point in time: a duration back from now (``15m``, ``2h``, ``7d``) or a date-time."""
    if value is None:
        return None
    text = value.strip()
    seconds = duration_seconds(text)
    if seconds is not None:
        return seconds_ago(seconds, text)
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30s, 15m, 2h, 7d) nor a date-time "
            "(2026-04-18T17:00:00Z; local time without an offset)"
        ) from None
    if when.tzinfo is not None:
        return when
    try:
        return when.astimezone()
    except (OverflowError, ValueError):  # year 1 or 9999 in local time is beyond UTC's range
        raise click.BadParameter(f"{text!r} in local time is out of range; add an offset") from None


since_option = click.option(
    "--since",
    metavar="WHEN",
    callback=_since,
    help="Only newer: 15m, 2h, 7d, or a date-time such as 2026-04-18T17:00Z.",
)
