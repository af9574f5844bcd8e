"""How the ``agentguard`` command prints: rich tables and colours on a terminal; the same text as
plain lines when piped, so scripts see what they always saw.

Piped output is decided here, not by rich: rich would also treat FORCE_COLOR or TTY_COMPATIBLE
in the environment (set by many CI systems) as a terminal and change what a script reads.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import IO, Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..client import (
    Acks,
    Agent,
    ApiKey,
    Drill,
    ReviveRequest,
    Series,
    StreamEvent,
    Webhook,
    WebhookDelivery,
)
from ..records import AuditEntry, Intervention, KillStatus, KillSwitch
from ..wording import last_line, plural

CELL_WIDTH = 60  # free text (reasons, details) is clipped to this in tables
PLAIN_WIDTH = 1 << 20  # piped output is never wrapped or cropped
HEALTH_STYLES = {"active": "green", "killed": "bold red", "stale": "yellow", "crashed": "red"}


# -- consoles ------------------------------------------------------------------------------------


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal that understands rich's escape codes."""
    try:
        tty = stream.isatty()
    except ValueError:  # closed
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def console(*, err: bool = False) -> Console:
    """A console on stdout (or stderr): rich on a terminal, plain text otherwise."""
    stream = sys.stderr if err else sys.stdout
    tty = is_terminal(stream)
    return Console(
        file=stream,
        force_terminal=tty,
        width=None if tty else PLAIN_WIDTH,
        highlight=False,  # colour only what we colour, not every number and quote
        emoji=False,
        markup=False,  # a "[red]" in a reason is text
    )


def plain(renderable: RenderableType) -> str:
    """``renderable`` as piped text: no styles; tables without trailing blanks.

    Strings and Text pass as they are (rich would expand their tabs and drop control
    characters, and a reason is printed as it was given).
    """
    if isinstance(renderable, str):
        return renderable
    if isinstance(renderable, Text):
        return renderable.plain
    if isinstance(renderable, Group):
        return "\n".join(plain(part) for part in renderable.renderables)
    quiet = Console(file=io.StringIO(), force_terminal=False, width=PLAIN_WIDTH)
    with quiet.capture() as captured:
        quiet.print(renderable, highlight=False, emoji=False)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def show(renderable: RenderableType, *, err: bool = False) -> None:
    """Print a table or text: rich on a terminal, :func:`plain` lines when piped."""
    out = console(err=err)
    if out.is_terminal:
        out.print(renderable)
    else:
        click.echo(plain(renderable), err=err)


def echo_json(value: Any) -> None:
    """A model (as the API sent it) or plain data, as indented JSON."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_unset=True)
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# -- words ---------------------------------------------------------------------------------------
# Relative times are written here rather than by humanize: its words ("2 minutes ago") differ
# from the ones scripts and README know ("2 min ago"), and a dependency for 20 lines is dear.


def now() -> datetime:
    return datetime.now(timezone.utc)


def ago(when: datetime | None, at: datetime | None = None) -> str:
    """``when`` relative to ``at`` (default: now): "just now", "2 min ago", "in 3 s"."""
    if when is None:
        return "-"
    seconds = ((at or now()) - when).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "just now"
    if span < 60:
        text = f"{int(span)} s"
    elif span < 3600:
        text = f"{int(span // 60)} min"
    elif span < 86400:
        text = f"{int(span // 3600)} h"
    else:
        days = int(span // 86400)
        text = f"{days} day" + ("s" if days != 1 else "")
    return f"in {text}" if seconds < 0 else f"{text} ago"


def local(when: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``when`` in the local time zone."""
    return when.astimezone().strftime(fmt) if when is not None else "-"


def clip(text: str | None, width: int = CELL_WIDTH) -> str:
    """One line of at most ``width`` characters.

    Clipped here, not by rich's ellipsis overflow: rich clips to the terminal, and piped rows
    must keep the same width everywhere. (textwrap.shorten breaks at words, which hides ids.)
    """
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def target(target_type: str | None, target_id: str | None) -> str:
    """A target as a sentence names it: ``agent 'rogue-bot'``."""
    return f"{target_type} {target_id!r}"


def cell_target(target_type: str | None, target_id: str | None) -> str:
    """A target as a table cell: ``agent/rogue-bot``."""
    if target_type is None and target_id is None:
        return "-"
    return f"{target_type}/{target_id}"


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _health(health: str, shown: str | None = None) -> Text:
    return Text(shown or health, style=HEALTH_STYLES.get(health, ""))


# -- tables --------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """Left-aligned columns two spaces apart, headers first; empty cells show ``-``.

    No borders, so the piped text is the columns alone. On a narrow terminal the last column
    (free text, mostly) wraps, and only then do the others shrink, with an ellipsis.
    """
    grid = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for n, header in enumerate(headers, 1):
        last = n == len(headers)
        grid.add_column(header, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for row in rows:
        grid.add_row(*(_cell(c) for c in row))
    return grid


def _cell(value: object) -> Text:
    if isinstance(value, Text):
        return value if value.plain else Text("-")
    return Text("-" if value is None or value == "" else str(value))  # never read as markup


def _listing(rows: Table, shown: int, count: int, empty: str) -> RenderableType:
    if shown == 0:
        return Text(empty if count == 0 else f"no rows on this page ({count} in all)")
    if count > shown:
        return Group(rows, Text(f"({shown} of {count}; see --limit and --skip)", style="dim"))
    return rows


# -- records -------------------------------------------------------------------------------------


def kill_switches(rows: Sequence[KillSwitch], count: int) -> RenderableType:
    at = now()
    body = table(
        ("TYPE", "ID", "KILLED", "BY", "REASON"),
        (
            (k.target_type, k.target_id, ago(k.killed_at, at), k.killed_by, clip(k.reason))
            for k in rows
        ),
    )
    return _listing(body, len(rows), count, "no active kill switches")


def kill_switch(change_kind: str, ks: KillSwitch, version: int) -> str:
    """The sentence after a kill or a revive."""
    if change_kind == "kill":
        because = f": {ks.reason}" if ks.reason else ""
        until = (
            f" until {local(ks.expires_at)} ({ago(ks.expires_at)})"
            if ks.expires_at is not None
            else ""
        )
        return f"killed {target(ks.target_type, ks.target_id)}{until} (version {version}){because}"
    return (
        f"revived {target(ks.target_type, ks.target_id)} (version {version}); it was killed "
        f"{ago(ks.killed_at)} by {ks.killed_by}" + (f": {ks.reason}" if ks.reason else "")
    )


def revive_requested(r: ReviveRequest) -> str:
    """The sentence after a revive that became a request."""
    others = r.people_required - 1
    return (
        f"revive request {r.id} created: {target(r.target_type, r.target_id)} stays killed "
        f"until {others} other {'person approves' if others == 1 else 'people approve'} it "
        f"(agentguard revive --approve {r.id}); it expires {local(r.expires_at)} "
        f"({ago(r.expires_at)})"
    )


def revive_request_answer(verb: str, r: ReviveRequest) -> str:
    """The sentence after an approval or a rejection."""
    what = target(r.target_type, r.target_id)
    if r.status == "approved" and r.kill_switch is not None:
        return f"approved revive request {r.id}: revived {what}"
    if r.status == "pending":
        left = r.people_required - 1 - len(r.approvals)
        return (
            f"approved revive request {r.id}: {what} stays killed until {left} more "
            f"{'person approves' if left == 1 else 'people approve'} it"
        )
    return f"{verb} revive request {r.id}: {what} stays killed"


def revive_requests(rows: Sequence[ReviveRequest], count: int) -> RenderableType:
    at = now()
    body = table(
        ("REQUEST", "TYPE", "ID", "ASKED", "BY", "APPROVALS", "EXPIRES", "REASON"),
        (
            (
                r.id,
                r.target_type,
                r.target_id,
                ago(r.requested_at, at),
                r.requested_by,
                f"{len(r.approvals)}/{r.people_required - 1}",
                ago(r.expires_at, at),
                clip(r.reason),
            )
            for r in rows
        ),
    )
    return _listing(body, len(rows), count, "no revive requests waiting")


def already_killed(ks: Any) -> str:
    """The 409 of a kill, as a person reads it."""
    return (
        f"{target(ks.target_type, ks.target_id)} is already killed by {ks.killed_by} at "
        f"{local(ks.killed_at)} ({ago(ks.killed_at)})"
        + (f", reason: {ks.reason}" if ks.reason else ", no reason given")
    )


def status(s: KillStatus) -> str:
    if not s.is_killed:
        return f"{target(s.target_type, s.target_id)} is not killed"
    by = f" by {s.killed_by}" if s.killed_by else ""
    return (
        f"{target(s.target_type, s.target_id)} is KILLED{by} since {local(s.killed_at)} "
        f"({ago(s.killed_at)})" + (f": {s.reason}" if s.reason else "")
    )


def ran_for(ms: float | None) -> str:
    """How long a call ran before a kill stopped it: ``340 ms``, ``2.3 s``, ``4 min 10 s``."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{ms / 1000:.0f} s"
    minutes, rest = divmod(ms / 1000, 60)
    return f"{minutes:.0f} min {rest:.0f} s"


def interventions(rows: Sequence[Intervention], count: int) -> RenderableType:
    at = now()
    body = table(
        ("WHEN", "TYPE", "ACTION", "TARGET", "AGENT", "RUN", "INSTANCE", "RAN FOR", "REASON"),
        (
            (
                ago(i.occurred_at, at),
                str(i.type),
                clip(f"{i.action} {i.model}" if i.model else i.action, 48),
                cell_target(i.target_type, i.target_id),
                i.agent_id,
                i.run_id,
                i.instance_id,
                ran_for(i.ran_for_ms),
                clip(i.reason),
            )
            for i in rows
        ),
    )
    return _listing(body, len(rows), count, "no interventions")


def audit(rows: Sequence[AuditEntry], count: int) -> RenderableType:
    at = now()
    body = table(
        ("WHEN", "ACTION", "TARGET", "ACTOR", "VERSION", "DETAIL"),
        (
            (
                ago(e.created_at, at),
                e.action,
                cell_target(e.target_type, e.target_id),
                e.actor,
                e.version,
                clip(e.detail),
            )
            for e in rows
        ),
    )
    return _listing(body, len(rows), count, "no audit entries")


def agents(rows: Sequence[Agent], count: int) -> RenderableType:
    at = now()
    body = table(
        (
            "AGENT",
            "HEALTH",
            "INSTANCES",
            "LAST SEEN",
            "EXECUTED",
            "REFUSED",
            "STOPPED",
            "FAILED",
            "DRILL",
            "COST",
        ),  # fmt: skip
        (
            (
                a.agent_id,
                _health(a.health, a.health.upper() if a.health == "killed" else None),
                len(a.instances),
                ago(a.last_seen, at),
                a.executed,
                a.refused,
                a.cancelled,
                a.failed,
                _drill(a.last_drill, at),
                _money(a.cost_usd),
            )
            for a in rows
        ),
    )
    return _listing(body, len(rows), count, "no agents have reported yet")


def _drill(d: Drill | None, at: datetime) -> Text | str:
    """An agent's last drill in a few words: ``armed 2 h ago``, ``NOT ARMED 5 min ago``."""
    if d is None:
        return "-"
    when = ago(d.finished_at or d.started_at, at)
    if d.armed:
        return Text(f"armed {when}", style="green")
    return Text(f"NOT ARMED {when}", style="bold red")


def agent(a: Agent) -> RenderableType:
    at = now()
    lines: list[RenderableType] = [
        f"agent      {a.agent_id}",
        Text.assemble("health     ", _health(a.health)),
        f"last seen  {local(a.last_seen)} ({ago(a.last_seen, at)})",
        f"calls      {a.executed} executed, {a.refused} refused, {a.cancelled} stopped by a "
        f"kill, {a.failed} failed",
        f"cost       {_money(a.cost_usd)} in all, {_money(a.cost_usd_today)} today",
    ]
    if a.kill_switch is not None:
        ks = a.kill_switch
        lines.append(
            f"killed     {ago(ks.killed_at, at)} by {ks.killed_by}"
            + (f": {ks.reason}" if ks.reason else "")
        )
    if a.last_drill is not None:
        d = a.last_drill
        lines.append(f"drill      {d.summary()} ({ago(d.finished_at or d.started_at, at)})")
    if a.instances:
        lines.append("")
        lines.append(
            table(
                (
                    "INSTANCE",
                    "HEALTH",
                    "STATUS",
                    "LAST SEEN",
                    "RUN",
                    "MISSION",
                    "EXECUTED",
                    "REFUSED",
                    "STOPPED",
                    "FAILED",
                    "COST",
                    "VERSION",
                    "ERROR",
                ),  # fmt: skip
                (
                    (
                        i.instance_id,
                        _health(i.health),
                        i.status,
                        ago(i.last_seen, at),
                        i.run_id,
                        i.mission_id,
                        i.executed,
                        i.refused,
                        i.cancelled,
                        i.failed,
                        _money(i.cost_usd),
                        i.version,
                        clip(last_line(i.error), 40),
                    )
                    for i in a.instances
                ),
            )
        )
    return Group(*lines)


def span(seconds: int) -> str:
    """A whole number of seconds as the series speak of it: "30 s", "5 min", "24 h", "7 days"."""
    for size, unit in ((86400, " day"), (3600, " h"), (60, " min")):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n}{unit}" + ("s" if unit == " day" and n != 1 else "")
    return f"{seconds} s"


def series(s: Series) -> RenderableType:
    """A series as a table, one row per bucket, oldest first, with its totals and events."""
    whose = "the organization" if s.agent_id is None else target("agent", s.agent_id)
    fmt = "%Y-%m-%d %H:%M" if s.step % 60 == 0 else "%Y-%m-%d %H:%M:%S"
    head = (
        f"{whose}: last {span(s.window)} in steps of {span(s.step)}, "
        f"{local(s.start, fmt)} to {local(s.end, fmt)} ({local(s.end, '%Z')})"
    )
    t = s.totals
    rows = [
        (local(p.at, fmt), p.executed, p.refused, p.cancelled, p.unavailable, p.failed,
         _money(p.cost_usd))
        for p in s.points
    ]  # fmt: skip
    rows.append(
        ("TOTAL", t.executed, t.refused, t.cancelled, t.unavailable, t.failed, _money(t.cost_usd))
    )
    body = table(("FROM", "EXECUTED", "REFUSED", "STOPPED", "UNAVAILABLE", "FAILED", "COST"), rows)
    parts: list[RenderableType] = [Text(head), body]
    if s.events_count:
        shown = len(s.events)
        more = f" (the newest {shown} of {s.events_count})" if s.events_count > shown else ""
        parts.append(Text(f"kills and revives{more}:"))
        parts.append(
            table(
                ("WHEN", "EVENT", "TARGET", "BY", "REASON"),
                (
                    (
                        local(e.at),
                        e.kind,
                        cell_target(e.target_type, e.target_id),
                        e.actor,
                        clip(e.reason),
                    )
                    for e in s.events
                ),  # fmt: skip
            )
        )
    else:
        parts.append(Text("no kills or revives in the window"))
    return Group(*parts)


def key_agents(scopes: Sequence[str], agents: Sequence[str] | None) -> str:
    """What a key may speak for, in words: ``any agent`` for ``*``; blank if not an agent key."""
    if "agent" not in scopes:
        return ""
    if {"admin", "operator"} & set(scopes):
        return "any agent"
    if not agents:
        return "no agent (re-create with --agent)"
    return "any agent" if "*" in agents else ",".join(agents)


def keys(rows: Sequence[ApiKey], count: int) -> RenderableType:
    at = now()
    body = table(
        ("ID", "SCOPES", "AGENTS", "OWNER", "NAME", "CREATED", "STATE"),
        (
            (
                k.id,
                ",".join(k.scopes),
                key_agents(k.scopes, k.agents),
                k.owner,
                k.name,
                ago(k.created_at, at),
                Text(f"revoked {ago(k.revoked_at, at)}", style="dim")
                if k.revoked_at
                else Text("active", style="green"),
            )
            for k in rows
        ),
    )
    return _listing(body, len(rows), count, "no API keys")


# -- webhooks ------------------------------------------------------------------------------------

DELIVERY_STYLES = {"delivered": "green", "failed": "bold red", "pending": "yellow"}


def delivery_state(d: WebhookDelivery | None, at: datetime | None = None) -> Text:
    """How a delivery went, in a few words: ``delivered 2 min ago (200)``, ``retrying ...``."""
    if d is None:
        return Text("-")
    code = f" ({d.response_status})" if d.response_status is not None else ""
    if d.status == "delivered":
        return Text(f"delivered {ago(d.delivered_at, at)}{code}", style="green")
    if d.status == "failed":
        return Text(f"gave up after {plural(d.attempts, 'attempt')}{code}", style="bold red")
    if d.attempts == 0:
        return Text("queued", style="yellow")
    return Text(
        f"retrying {ago(d.next_attempt_at, at)} after {plural(d.attempts, 'attempt')}{code}",
        style="yellow",
    )


def webhooks(rows: Sequence[Webhook], count: int) -> RenderableType:
    at = now()
    body = table(
        ("ID", "FORMAT", "EVENTS", "PENDING", "LAST DELIVERY", "NAME", "URL"),
        (
            (
                w.id,
                w.format,
                ",".join(w.events),
                w.pending,
                delivery_state(w.last_delivery, at),
                w.name,
                clip(w.url, 80),
            )
            for w in rows
        ),
    )
    return _listing(body, len(rows), count, "no webhooks")


def deliveries(rows: Sequence[WebhookDelivery], count: int) -> RenderableType:
    at = now()
    body = table(
        ("QUEUED", "EVENT", "EVENT ID", "STATUS", "ATTEMPTS", "LAST ATTEMPT", "HTTP", "ERROR"),
        (
            (
                ago(d.created_at, at),
                d.event,
                d.event_id,
                delivery_state(d, at),
                d.attempts,
                ago(d.last_attempt_at, at) if d.last_attempt_at else None,
                d.response_status,
                clip(d.error),
            )
            for d in rows
        ),
    )
    return _listing(body, len(rows), count, "no deliveries")


# -- kill --wait ---------------------------------------------------------------------------------


# The words README uses: "acknowledged by 49/50 instances, slowest 41 ms".
def acknowledged(a: Acks) -> str:
    return f"acknowledged by {a.acknowledged}/{plural(a.live, 'instance')}"


def acks_progress(a: Acks, elapsed: float) -> str:
    return f"{acknowledged(a)} ({elapsed:.1f} s)"


def acks_done(a: Acks) -> str:
    if a.live == 0:
        return f"{acknowledged(a)}: no live instance runs under this target"
    text = acknowledged(a)
    if a.slowest_ms is not None:
        text += f", slowest {a.slowest_ms:.0f} ms"
    slowest = a.slowest
    if slowest is not None:
        text += f" ({_instance(slowest.instance_id, slowest.agent_id)})"
    return text


def acks_missing(a: Acks, timeout: float) -> str:
    waiting = [i for i in a.instances if not i.acknowledged]
    names = ", ".join(_instance(i.instance_id, i.agent_id) for i in waiting[:5])
    more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
    return (
        f"{acknowledged(a)} within {timeout:g} s"
        + (f"; waiting on {names}{more}" if names else "")
        + " (the kill itself is in force)"
    )


def _instance(instance_id: str, agent_id: str | None) -> str:
    return f"{instance_id} (agent {agent_id})" if agent_id else instance_id


# -- tail ----------------------------------------------------------------------------------------

TAIL_STYLES = {
    "KILLED": "bold red",
    "REVIVED": "bold green",
    "BLOCKED": "bold yellow",
    "STOPPED": "bold magenta",
}


def _when(value: Any) -> str:
    if not isinstance(value, str):
        return local(now(), "%H:%M:%S")
    try:
        return local(datetime.fromisoformat(value), "%H:%M:%S")
    except ValueError:
        return value


def snapshot(event: StreamEvent, url: str) -> str:
    active = event.data.get("active") or []
    version = event.data.get("version")
    return f"watching {url}: {plural(len(active), 'active kill switch')} at version {version}"


def stream_event(event: StreamEvent) -> Text | None:
    """One line per kill, revive or intervention; ``None`` for other events."""
    data = event.data
    if event.event in ("kill", "revive"):
        ks = data.get("kill_switch") or {}
        what = cell_target(ks.get("target_type"), ks.get("target_id"))
        version = data.get("version", event.id)
        if event.event == "kill":
            reason = f"  {clip(ks.get('reason'))}" if ks.get("reason") else ""
            return _event_line(
                _when(ks.get("killed_at")),
                "KILLED ",
                f"{what}  by {ks.get('killed_by')}  v{version}{reason}",
            )
        return _event_line(
            _when(ks.get("revived_at")), "REVIVED", f"{what}  by {ks.get('revived_by')}  v{version}"
        )
    if event.event == "intervention":
        kind = {"HARD_BLOCK": "BLOCKED", "CANCELLED": "STOPPED"}.get(
            str(data.get("type")), str(data.get("type"))
        )
        scope = "  ".join(
            f"{name}={data[key]}"
            for key, name in (
                ("model", "model"),
                ("agent_id", "agent"),
                ("run_id", "run"),
                ("instance_id", "instance"),
            )
            if data.get(key)
        )
        reason = f"  {clip(data.get('reason'))}" if data.get("reason") else ""
        if kind == "STOPPED" and isinstance(data.get("ran_for_ms"), (int, float)):
            reason = f"  after {ran_for(data['ran_for_ms'])}{reason}"
        return _event_line(
            _when(data.get("occurred_at")),
            f"{kind:<7}",
            f"{data.get('action')}  "
            f"{cell_target(data.get('target_type'), data.get('target_id'))}"
            + (f"  {scope}" if scope else "")
            + reason,
        )
    return None


def _event_line(when: str, kind: str, rest: str) -> Text:
    return Text.assemble(
        (when, "dim"), "  ", (kind, TAIL_STYLES.get(kind.strip(), "bold")), "  ", rest
    )
