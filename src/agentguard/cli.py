"""The ``agentguard`` command: operate kill switches from a terminal, serve the API, manage keys.

Commands are a click group; more attach with ``@main.command()`` or ``main.add_command``.
Remote commands talk to the HTTP API through :class:`agentguard.client.Client`; output is
formatted by :mod:`agentguard.cli_output`.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import queue
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

try:
    import click
    from click.core import ParameterSource
    from click.shell_completion import CompletionItem
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError('the agentguard command needs click: pip install "agentguard[cli]"') from exc

from . import cli_output as out
from ._version import __version__
from .client import Acks, ApiKey, Client, ConflictError, NotFoundError, StreamEvent
from .errors import (
    AgentGuardError,
    AlreadyKilledError,
    AuthenticationError,
    InvalidInputError,
    NotKilledError,
    PermissionDeniedError,
)
from .targets import TARGET_TYPES
from .wording import plural

EXIT_ERROR = 1
EXIT_CONFLICT = 3
EXIT_KILLED = 4  # check --exit-status: the target is killed
DEFAULT_DATABASE_URL = "sqlite:///agentguard.db"
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "AGENTGUARD_URL"
API_KEY_ENV = "AGENTGUARD_API_KEY"
DATABASE_URL_ENV = "AGENTGUARD_DATABASE_URL"
SCOPE_NAMES = ("admin", "operator", "agent", "read")
AUDIT_ACTIONS = ("kill", "revive", "key.create", "key.revoke", "ack.refused", "rule.observed")
INTERVENTION_TYPES = ("HARD_BLOCK", "OBSERVED", "UNAVAILABLE")
STREAMED = ("kill", "revive", "intervention")  # the events --count counts
# API field names that differ from the CLI parameter holding them.
FIELD_PARAMS = {"type": "intervention_type"}


class ConflictOrNotFound(click.ClickException):
    """A conflict or a missing record: exit code 3."""

    exit_code = EXIT_CONFLICT


# -- options -------------------------------------------------------------------------------------

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


_DURATION = re.compile(r"^(\d+)\s*(s|m|min|h|d)$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A point in time: a duration back from now (``15m``, ``2h``, ``7d``) or a date-time."""
    if value is None:
        return None
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _SECONDS[match.group(2)]
        try:
            return datetime.now(timezone.utc) - timedelta(seconds=seconds)
        except OverflowError:
            raise click.BadParameter(f"{text!r} reaches back before the year 1") from None
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


# -- errors --------------------------------------------------------------------------------------


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client of ``url``, with its errors turned into messages and exit codes."""
    with api_errors(api_key):
        client = Client(url, api_key=api_key)
        try:
            yield client
        finally:
            client.close()


@contextmanager
def api_errors(api_key: str | None) -> Iterator[None]:
    """Turn client errors into click errors: 3 for conflicts and misses, 2 for bad input."""
    try:
        yield
    except AlreadyKilledError as exc:
        raise ConflictOrNotFound(out.already_killed(exc.kill_switch)) from None
    except (NotKilledError, NotFoundError, ConflictError) as exc:
        raise ConflictOrNotFound(str(exc)) from None
    except InvalidInputError as exc:
        raise bad_parameter(exc) from None
    except AuthenticationError as exc:
        hint = "" if api_key else f" (no API key given: use --api-key or set {API_KEY_ENV})"
        raise click.ClickException(f"the server refused the credentials: {exc}{hint}") from None
    except PermissionDeniedError as exc:
        raise click.ClickException(f"permission denied: {exc}") from None
    except AgentGuardError as exc:
        raise click.ClickException(str(exc)) from None


def bad_parameter(exc: InvalidInputError) -> click.BadParameter:
    """A usage error naming the CLI parameter behind an API field, if there is one."""
    ctx = click.get_current_context(silent=True)
    name = FIELD_PARAMS.get(exc.field, exc.field)
    param = None
    if ctx is not None:
        param = next((p for p in ctx.command.params if p.name == name), None)
    hint = None if param is not None else f"'{exc.field}'"
    return click.BadParameter(exc.message, ctx=ctx, param=param, param_hint=hint)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn agentguard and database errors into click errors with the right exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except InvalidInputError as exc:
        raise bad_parameter(exc) from None
    except AgentGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {exc.__class__.__name__}: {exc}") from None


def echo_json(value: Any) -> None:
    """A model (as the API sent it) or plain data, as indented JSON."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_unset=True)
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# -- the group -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="agentguard")
def main() -> None:
    """agentguard: an embeddable kill switch for AI agents.

    \b
    Remote commands connect with --url and --api-key, or AGENTGUARD_URL and
    AGENTGUARD_API_KEY. Every read command takes --json (the API's JSON) for scripts.

    \b
    Exit codes:
      0  success
      1  error: server unreachable, credentials refused (401), scope missing (403),
         kill --wait or tail --count not done in time
      2  usage: bad option or argument, or input the server rejected (the field is named)
      3  conflict or not found: already killed, not killed, unknown agent or API key
      4  check --exit-status: the target is killed

    \b
    Shell completion (click's own):
      bash  eval "$(_AGENTGUARD_COMPLETE=bash_source agentguard)"   in ~/.bashrc
      zsh   eval "$(_AGENTGUARD_COMPLETE=zsh_source agentguard)"    in ~/.zshrc
      fish  _AGENTGUARD_COMPLETE=fish_source agentguard | source     in config.fish
    """


# -- kill switch ---------------------------------------------------------------------------------


def _complete_killed(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Complete a revive's ID from the server's active kill switches (quietly, 2 s at most)."""
    url = ctx.params.get("url") or os.environ.get(URL_ENV, DEFAULT_URL)
    api_key = ctx.params.get("api_key") or os.environ.get(API_KEY_ENV)
    target_type = ctx.params.get("target_type")
    try:
        with Client(url, api_key=api_key, timeout=2.0) as client:
            rows = client.active(limit=1000).data
    except Exception:  # completion must never fail loudly
        return []
    return [
        CompletionItem(k.target_id, help=k.reason or None)
        for k in rows
        if k.target_id.startswith(incomplete) and target_type in (None, k.target_type)
    ]


@main.command()
@target_type_argument
@click.argument("target_id", metavar="ID")
@click.option("--reason", "-r", help="Why: recorded, audited, and told to every refused agent.")
@click.option(
    "--wait", is_flag=True, help="Then wait until every live instance has acknowledged the kill."
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=Seconds(0, 3600),
    help="Seconds --wait waits.",
)
@json_option
@remote
def kill(
    client: Client,
    target_type: str,
    target_id: str,
    reason: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Kill a target.

    Every instance of it refuses its next guarded call. TYPE is agent, run, mission or
    tool. Exit code 3 if it is already killed. With --wait, progress goes to stderr, and the
    exit code is 1 if not every live instance acknowledged within --timeout (the kill stays
    in force).
    """
    change = client.kill(target_type, target_id, reason=reason)
    if not wait:
        if as_json:
            echo_json(change.kill_switch)
        else:
            click.echo(out.kill_switch("kill", change.kill_switch, change.version))
        return
    if not as_json:
        click.echo(out.kill_switch("kill", change.kill_switch, change.version))
    started = time.monotonic()
    acks = client.wait_for_acks(
        target_type, target_id, timeout=timeout, progress=_progress_printer(started)
    )
    waited = time.monotonic() - started
    if sys.stderr.isatty():
        click.echo(err=True)
    if as_json:
        echo_json(
            {
                "kill_switch": change.kill_switch.model_dump(mode="json"),
                "version": change.version,
                "acks": acks.model_dump(mode="json", exclude_unset=True),
                "complete": acks.complete,
                "waited_s": round(waited, 3),
            }
        )
    if not acks.complete:
        raise click.ClickException(out.acks_missing(acks, timeout))
    if not as_json:
        click.echo(out.acks_done(acks))


def _progress_printer(started: float) -> Callable[[Acks], None]:
    """Show acknowledgement progress on stderr: one rewritten line on a terminal."""
    tty = sys.stderr.isatty()
    shown: list[tuple[int, int]] = []

    def show(acks: Acks) -> None:
        line = out.acks_progress(acks, time.monotonic() - started)
        if tty:
            click.echo("\r" + line, nl=False, err=True)
        elif not shown or shown[-1] != (acks.acknowledged, acks.live):
            click.echo(line, err=True)
        shown.append((acks.acknowledged, acks.live))

    return show


@main.command()
@target_type_argument
@click.argument("target_id", metavar="ID", shell_complete=_complete_killed)
@json_option
@remote
def revive(client: Client, target_type: str, target_id: str, as_json: bool) -> None:
    """Revive a killed target.

    Its agents resume. Exit code 3 if it is not killed.
    """
    change = client.revive(target_type, target_id)
    if as_json:
        echo_json(change.kill_switch)
    else:
        click.echo(out.kill_switch("revive", change.kill_switch, change.version))


@main.command()
@target_type_argument
@click.argument("target_id", metavar="ID")
@click.option(
    "--exit-status", is_flag=True, help="Exit code 4 if the target is killed, 0 if it is not."
)
@json_option
@remote
def check(
    client: Client, target_type: str, target_id: str, exit_status: bool, as_json: bool
) -> None:
    """Whether a target is killed.

    Exit code 0 either way, unless --exit-status: then 4 if it is killed (still printed).
    Scripts may also read is_killed from --json.
    """
    status = client.check(target_type, target_id)
    if as_json:
        echo_json(status)
    else:
        click.echo(out.status(status))
    if exit_status and status.is_killed:
        sys.exit(EXIT_KILLED)


@main.command()
@limit_option
@skip_option
@json_option
@remote
def active(client: Client, limit: int, skip: int, as_json: bool) -> None:
    """Active kill switches, newest first."""
    page = client.active(skip=skip, limit=limit)
    if as_json:
        echo_json(page)
    else:
        click.echo(out.kill_switches(page.data, page.count))


# -- fleet, interventions, audit -----------------------------------------------------------------


@main.command()
@click.argument("agent_id", required=False)
@limit_option
@skip_option
@json_option
@remote
def agents(client: Client, agent_id: str | None, limit: int, skip: int, as_json: bool) -> None:
    """Agents and their health.

    With AGENT_ID, one agent and its instances; exit code 3 if the server does not know it.
    """
    if agent_id is not None:
        agent = client.agent(agent_id)
        if as_json:
            echo_json(agent)
        else:
            click.echo(out.agent(agent))
        return
    page = client.agents(skip=skip, limit=limit)
    if as_json:
        echo_json(page)
    else:
        click.echo(out.agents(page.data, page.count))


@main.command()
@click.option("--target-type", type=click.Choice(TARGET_TYPES), help="Only this target type.")
@click.option("--target-id", help="Only this target.")
@click.option(
    "--type",
    "intervention_type",
    type=click.Choice(INTERVENTION_TYPES),
    help="Only this kind of intervention.",
)
@click.option("--action", help="Only this guarded action (tool name).")
@since_option
@limit_option
@skip_option
@json_option
@remote
def interventions(
    client: Client,
    target_type: str | None,
    target_id: str | None,
    intervention_type: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """Interventions (refused calls), newest first."""
    page = client.interventions(
        target_type=target_type,
        target_id=target_id,
        type=intervention_type,
        action=action,
        since=since,
        skip=skip,
        limit=limit,
    )
    if as_json:
        echo_json(page)
    else:
        click.echo(out.interventions(page.data, page.count))


@main.command()
@click.option("--action", type=click.Choice(AUDIT_ACTIONS), help="Only this action.")
@click.option(
    "--target-type", type=click.Choice((*TARGET_TYPES, "api_key")), help="Only this target type."
)
@click.option("--target-id", help="Only this target.")
@since_option
@limit_option
@skip_option
@json_option
@remote
def audit(
    client: Client,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """The audit log, newest first.

    Kills, revives, API keys created and revoked: who, when, and under which version.
    """
    page = client.audit(
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        skip=skip,
        limit=limit,
    )
    if as_json:
        echo_json(page)
    else:
        click.echo(out.audit(page.data, page.count))


# -- tail ----------------------------------------------------------------------------------------


CATCH_UP_MARGIN = timedelta(minutes=1)
_SEEN_LIMIT = 10_000


def _first_sight(seen: dict[str, None], data: dict[str, Any]) -> bool:
    """Remember an intervention's id; False if it was already shown."""
    key = str(data.get("id"))
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > _SEEN_LIMIT:
        del seen[next(iter(seen))]
    return True


class _Feed:
    """Reads the change stream on a thread, reconnecting with Last-Event-ID after a loss.

    The queue carries events, notices (str) and, last, the error that ended the feed.
    """

    def __init__(self, client: Client, *, interventions: bool) -> None:
        self.client = client
        self.interventions = interventions
        self.items: queue.Queue[StreamEvent | str | Exception] = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentguard-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_id: str | None = None
        connected = False
        delay = 0.5
        lost_at: datetime | None = None
        seen: dict[str, None] = {}  # ids of the latest interventions shown, oldest first

        def opened() -> None:
            nonlocal lost_at
            if lost_at is not None and self.interventions:
                self._catch_up(lost_at, seen)
            lost_at = None

        while not self._stopped.is_set():
            try:
                for event in self.client.events(
                    interventions=self.interventions, last_event_id=last_id, on_open=opened
                ):
                    connected, delay = True, 0.5
                    last_id = event.id or last_id
                    if event.event == "intervention" and not _first_sight(seen, event.data):
                        continue
                    self.items.put(event)
            except (AuthenticationError, PermissionDeniedError, InvalidInputError) as exc:
                self.items.put(exc)
                return
            except AgentGuardError as exc:
                if self._stopped.is_set():
                    return
                if not connected:
                    self.items.put(exc)
                    return
                lost_at = lost_at or datetime.now(timezone.utc)
                self.items.put(f"stream lost ({exc}); reconnecting in {delay:g} s")
                self._stopped.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # a bug: end the command with it rather than hang
                self.items.put(exc)
                return

    def _catch_up(self, lost_at: datetime, seen: dict[str, None]) -> None:
        """Show the interventions stored while the stream was away (and not shown yet).

        Read by when they occurred, from a minute before the loss: guards send refusals in
        batches about every second, later when the server was unreachable for them too.
        """
        since = lost_at - CATCH_UP_MARGIN
        try:
            page = self.client.interventions(since=since, limit=1000)
        except AgentGuardError as exc:
            self.items.put(f"could not read the interventions stored while reconnecting: {exc}")
            return
        missed = 0
        for item in reversed(page.data):  # oldest first, as the stream sends them
            data = item.model_dump(mode="json")
            if _first_sight(seen, data):
                self.items.put(StreamEvent("intervention", None, data))
                missed += 1
        if missed:
            self.items.put(f"stream back; {missed} intervention(s) stored meanwhile shown above")

    def next(self, timeout: float | None) -> StreamEvent | str | Exception | None:
        """The next item, or ``None`` after ``timeout`` seconds."""
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._stopped.set()
        self.client.close()


@main.command()
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after N kill, revive or intervention events."
)
@click.option("--timeout", type=Seconds(min=0, min_open=True), help="Stop after this many seconds.")
@click.option(
    "--interventions/--no-interventions",
    default=True,
    show_default=True,
    help="Also stream refused calls.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
@remote
def tail(
    client: Client, count: int | None, timeout: float | None, interventions: bool, as_json: bool
) -> None:
    """Stream kills, revives and refused calls live, until Ctrl-C.

    With --json each line is {"event", "id", "data"}, the snapshot of active kill switches
    first. For scripts, --count and --timeout end the stream; the exit code is 1 if --count
    events did not arrive within --timeout.
    """
    feed = _Feed(client, interventions=interventions)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    try:
        while count is None or seen < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            item = feed.next(remaining)
            if item is None:
                continue
            if isinstance(item, Exception):
                raise item
            if isinstance(item, str):
                click.echo(item, err=True)
                continue
            if as_json:
                click.echo(json.dumps({"event": item.event, "id": item.id, "data": item.data}))
            elif item.event == "snapshot":
                click.echo(out.snapshot(item, client.url) + " (Ctrl-C to stop)", err=True)
            else:
                line = out.stream_event(item)
                if line is not None:
                    click.echo(line)
            if item.event in STREAMED:
                seen += 1
    except KeyboardInterrupt:
        return
    finally:
        feed.stop()
    if count is not None and seen < count:
        raise click.ClickException(f"{seen} of {plural(count, 'event')} within {timeout:g} s")


# -- serve ---------------------------------------------------------------------------------------


def _open_keys(database_url: str) -> Any:
    """The key store of an upgraded database."""
    from .server.auth.keys import KeyStore
    from .server.store.database import Database
    from .server.store.sqlstore import SQLStore

    database = Database(database_url)
    database.upgrade()
    return KeyStore(database, SQLStore(database).feed)


@main.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="SPEC",
    help="A server rule on fleet-wide totals, repeatable: budget:limit_usd=100,window=3600, "
    "rate:limit=10000,window=60 or error-rate:max_rate=0.2,min_calls=50,window=300 "
    "(fields of BudgetRule, RateRule, ErrorRateRule; per agent). Default: AGENTGUARD_RULES, "
    "the same specs separated by ';'.",
)
@click.option(
    "--require-reason", is_flag=True, help="Refuse kills without a reason (422 naming reason)."
)
@click.option(
    "--max-streams-per-key",
    type=click.IntRange(min=1),
    default=None,
    help="Open change streams one credential may hold per worker; one more gets 429 "
    "(default 100, or AGENTGUARD_MAX_STREAMS_PER_KEY).",
)
@click.option(
    "--max-streams-per-organization",
    type=click.IntRange(min=1),
    default=None,
    help="Open change streams one organization may hold per worker "
    "(default 1000, or AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION).",
)
@click.option(
    "--admin-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="On an empty database, write the first admin key to this new file (mode 0600) "
    "instead of printing it (so it stays out of container logs). It must not exist yet.",
)
@org_option
def serve(
    database_url: str,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    rules: tuple[str, ...],
    require_reason: bool,
    max_streams_per_key: int | None,
    max_streams_per_organization: int | None,
    admin_key_file: Path | None,
    organization_id: str,
) -> None:
    """Run the API with uvicorn. On an empty database, create an admin key and print it once
    (or write it to --admin-key-file)."""
    import uvicorn

    from .server.asgi import DATABASE_URL_ENV as SERVER_DATABASE_URL_ENV
    from .server.asgi import (
        MAX_STREAMS_PER_KEY_ENV,
        MAX_STREAMS_PER_ORG_ENV,
        REQUIRE_REASON_ENV,
        RULES_ENV,
        rules_from,
    )
    from .server.auth.session import SESSION_SECRET_ENV

    for spec in rules:
        if ";" in spec:
            raise click.BadParameter("give each rule its own --rule", param_hint="--rule")
    specs = ";".join(rules) if rules else os.environ.get(RULES_ENV, "")
    try:
        server_rules = rules_from(specs)
    except InvalidInputError as exc:
        hint = "--rule" if rules else RULES_ENV
        raise click.BadParameter(exc.message, param_hint=hint) from None
    for env, limit in (
        (MAX_STREAMS_PER_KEY_ENV, max_streams_per_key),
        (MAX_STREAMS_PER_ORG_ENV, max_streams_per_organization),
    ):
        if limit is not None:
            os.environ[env] = str(limit)
        elif os.environ.get(env, "").strip() and not re.fullmatch(
            r"[1-9][0-9]{0,8}", os.environ[env].strip()
        ):
            raise click.BadParameter(
                f"must be a whole number of at least 1; got {os.environ[env]!r}", param_hint=env
            )

    with database_errors():
        keys = _open_keys(database_url)
        if keys.count() == 0:
            key_file = _new_secret_file(admin_key_file) if admin_key_file else None
            try:
                key, token = keys.create(
                    organization_id,
                    owner="admin",
                    scopes=["admin"],
                    name="first admin key",
                    actor="agentguard serve",
                )
            except BaseException:
                if admin_key_file is not None and key_file is not None:
                    os.close(key_file)
                    admin_key_file.unlink()
                raise
            if key_file is not None:
                with os.fdopen(key_file, "w") as f:
                    f.write(token + "\n")
                click.echo(
                    f"Created the first admin key {key.id} for organization "
                    f"{organization_id!r}; wrote it to {admin_key_file} (mode 0600)."
                )
            else:
                click.echo(
                    f"Created the first admin key {key.id} for organization "
                    f"{organization_id!r}.\n"
                    f"It is shown only this once; store it now:\n\n    {token}\n"
                )
            sys.stdout.flush()
    os.environ[SERVER_DATABASE_URL_ENV] = database_url
    os.environ[RULES_ENV] = specs  # every worker builds the same rules
    if require_reason:
        os.environ[REQUIRE_REASON_ENV] = "1"
    for rule in server_rules:
        click.echo(f"Server rule: {rule}")
    # Every worker must sign console sessions alike, or a request landing on another worker
    # would find its session invalid. Set AGENTGUARD_SESSION_SECRET to keep them over restarts.
    os.environ.setdefault(SESSION_SECRET_ENV, secrets.token_urlsafe(32))
    click.echo(f"Console: http://{host}:{port}/kill-switch   API: http://{host}:{port}/api/v1")
    sys.stdout.flush()
    uvicorn.run(
        "agentguard.server.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


def _new_secret_file(path: Path) -> int:
    """Create ``path`` readable by its owner only; a usage error if it exists or cannot be."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.BadParameter(
            f"{path} exists already; remove it or name a new file", param_hint="--admin-key-file"
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot create {path}: {exc.strerror}", param_hint="--admin-key-file"
        ) from None


# -- keys ----------------------------------------------------------------------------------------


def keys_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where the keys live: the server (--url, --api-key) or the database (--database-url)."""
    f = org_option(f)
    f = click.option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="Work directly on this database instead of over HTTP (env AGENTGUARD_DATABASE_URL).",
    )(f)
    return connection_options(f)


def _keys_database(ctx: click.Context, database_url: str | None) -> str | None:
    """The database to work on directly, or ``None`` to go through the server.

    The command line wins over the environment; both places default to HTTP.
    """
    given = {
        name: ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        for name in ("database_url", "url", "api_key", "organization_id")
    }
    if given["database_url"] and (given["url"] or given["api_key"]):
        raise click.UsageError("give either --database-url or --url/--api-key, not both")
    direct = given["database_url"] or (
        database_url is not None and not (given["url"] or given["api_key"])
    )
    if not direct and given["organization_id"]:
        raise click.UsageError(
            "--org works only with --database-url; over HTTP the organization is the API key's"
        )
    return database_url if direct else None


@main.group()
def keys() -> None:
    """Create, list and revoke API keys.

    Over HTTP with an admin key, or directly on a database to bootstrap a fresh server.

    \b
    Over HTTP (needs an admin key):  agentguard keys list --url URL --api-key KEY
    On the database (bootstrapping): agentguard keys create --database-url URL --owner ...
    """


@keys.command("create")
@keys_options
@click.option("--owner", help="The user the key acts for (over HTTP: default the caller).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPE_NAMES),
    help="Repeat for several scopes.",
)
@click.option("--name", default=None, help="A label for the key.")
@click.option(
    "--agent",
    "agents",
    multiple=True,
    help="An agent the (agent-scoped) key speaks for: an id, or a prefix ending in '*' "
    "('billing-*'); '*' alone for any agent. Repeat for several.",
)
@json_option
@click.pass_context
def keys_create(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    owner: str | None,
    scopes: tuple[str, ...],
    name: str | None,
    agents: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key and print its secret (shown only this once).

    An agent key writes (heartbeats, acknowledgements, interventions, checkpoints) only for
    the agents named with --agent; without any it can only check and stream the kill state.
    """
    if agents and "agent" not in scopes:
        raise click.UsageError("--agent goes with --scope agent")
    if "agent" in scopes and not agents and not {"admin", "operator"} & set(scopes):
        click.echo(
            "warning: this agent key names no --agent, so it may report for no agent "
            "(heartbeats, acknowledgements, interventions, checkpoints); "
            "add --agent ID (or --agent '*' for any agent)",
            err=True,
        )
    database = _keys_database(ctx, database_url)
    if database is not None:
        if owner is None:
            raise click.UsageError("--owner is required with --database-url")
        with database_errors():
            key, token = _open_keys(database).create(
                organization_id,
                owner=owner,
                scopes=scopes,
                name=name,
                agents=agents,
                actor="agentguard keys create",
            )
        created = {**key.model_dump(mode="json"), "secret": token}
    else:
        with connect(url, api_key) as client:
            answer = client.create_key(
                list(scopes), owner=owner, name=name, agents=list(agents) or None
            )
        created = answer.model_dump(mode="json", exclude_unset=True)
    if as_json:
        echo_json(created)
    else:
        pure_agent = not {"admin", "operator"} & set(created["scopes"])
        speaks = out.key_agents(created["scopes"], created.get("agents")) if pure_agent else ""
        click.echo(
            f"created {created['id']} (scopes {','.join(created['scopes'])}, owner "
            f"{created['owner']}{', for ' + speaks if speaks else ''}); "
            "its secret is shown only this once:"
        )
        click.echo(created["secret"])


@keys.command("list")
@keys_options
@limit_option
@skip_option
@json_option
@click.pass_context
def keys_list(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """List the organization's keys, newest first, revoked ones included."""
    database = _keys_database(ctx, database_url)
    if database is not None:
        with database_errors():
            rows, count = _open_keys(database).list(organization_id, skip=skip, limit=limit)
        data = [ApiKey.model_validate(k.model_dump()) for k in rows]
    else:
        with connect(url, api_key) as client:
            page = client.keys(skip=skip, limit=limit)
        data, count = page.data, page.count
    if as_json:
        echo_json({"data": [k.model_dump(mode="json") for k in data], "count": count})
    else:
        click.echo(out.keys(data, count))


@keys.command("revoke")
@click.argument("key_id")
@keys_options
@json_option
@click.pass_context
def keys_revoke(
    ctx: click.Context,
    key_id: str,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    as_json: bool,
) -> None:
    """Revoke a key at once; exit code 3 if it does not exist or is already revoked."""
    database = _keys_database(ctx, database_url)
    if database is not None:
        from .server.store.keys import KeyNotFoundError, KeyRevokedError

        with database_errors():
            try:
                key = ApiKey.model_validate(
                    _open_keys(database)
                    .revoke(organization_id, key_id, actor="agentguard keys revoke")
                    .model_dump()
                )
            except (KeyNotFoundError, KeyRevokedError) as exc:
                raise ConflictOrNotFound(str(exc)) from None
    else:
        with connect(url, api_key) as client:
            key = client.revoke_key(key_id)
    if as_json:
        echo_json(key)
    else:
        click.echo(f"revoked {key.id}")


# -- db ------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@database_option
def db_upgrade(database_url: str) -> None:
    """Apply pending migrations."""
    from .server.store.database import Database

    with database_errors():
        database = Database(database_url)
        before = database.revision()
        database.upgrade()
        after = database.revision()
    click.echo(f"database at revision {after}" + ("" if before == after else f" (was {before})"))


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """A duration of at least a day: ``30d``, ``48h``."""
    match = _DURATION.match(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration such as 30d or 48h")
    try:
        age = timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])
        datetime.now(timezone.utc) - age  # the cut-off must be a date after the year 1
    except OverflowError:
        raise click.BadParameter(f"{value!r} reaches back before the year 1") from None
    if age < timedelta(days=1):
        raise click.BadParameter(
            f"{value!r} is under a day; rows that recent may still be in use (server rules "
            "read usage, and a silent instance may come back)"
        )
    return age


@db.command("prune")
@database_option
@click.option(
    "--older-than",
    "age",
    required=True,
    metavar="AGE",
    callback=_age,
    help="Delete rows last touched longer ago than this: 30d, 48h (at least a day).",
)
@click.option(
    "--interventions",
    "interventions_too",
    is_flag=True,
    help="Also delete interventions received before then (they are kept by default).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def db_prune(database_url: str, age: timedelta, interventions_too: bool, dry_run: bool) -> None:
    """Delete old fleet rows, in every organization.

    Instances not seen for AGE (and their kill acknowledgements) and usage slices older than
    AGE; with --interventions also interventions; and the sign-outs of console sessions that
    have expired anyway. Agents' totals then count the instances kept.
    Kill switches, the change log, the audit log and checkpoints are never deleted. One
    transaction: on any error nothing is deleted.
    """
    from .server.store.database import Database
    from .server.store.sqlstore import SQLStore

    before = datetime.now(timezone.utc) - age
    with database_errors():
        database = Database(database_url)
        database.upgrade()
        try:
            counts = SQLStore(database).prune(
                before, interventions_too=interventions_too, dry_run=dry_run
            )
        finally:
            database.dispose()
    verb = "would delete" if dry_run else "deleted"
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    click.echo(f"{verb} {summary} (last touched before {before:%Y-%m-%dT%H:%M:%SZ})")


# -- demo ----------------------------------------------------------------------------------------


@main.command()
def demo() -> None:
    """Run the demo.

    A runaway email agent on a real server: killed, refused, revived.
    """
    try:
        module = importlib.import_module("agentguard.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "agentguard.demo":
            raise
        raise click.ClickException(
            "the demo is not part of this installation (no module agentguard.demo)"
        ) from None
    sys.exit(module.main())


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="agentguard")
