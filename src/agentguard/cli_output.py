"""How the ``agentguard`` command prints: aligned tables, relative times, one-line events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from .client import Acks, Agent, ApiKey, StreamEvent
from .records import AuditEntry, Intervention, KillStatus, KillSwitch
from .wording import last_line, plural

CELL_WIDTH = 60  # free text (reasons, details) is clipped to this in tables


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
    """One line of at most ``width`` characters."""
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


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, headers first; empty cells show ``-``."""
    lines = [list(headers)] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _listing(rows: str, shown: int, count: int, empty: str) -> str:
    if shown == 0:
        return empty if count == 0 else f"no rows on this page ({count} in all)"
    if count > shown:
        return f"{rows}\n({shown} of {count}; see --limit and --skip)"
    return rows


# -- records -------------------------------------------------------------------------------------


def kill_switches(rows: Sequence[KillSwitch], count: int) -> str:
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
        return f"killed {target(ks.target_type, ks.target_id)} (version {version}){because}"
    return (
        f"revived {target(ks.target_type, ks.target_id)} (version {version}); it was killed "
        f"{ago(ks.killed_at)} by {ks.killed_by}" + (f": {ks.reason}" if ks.reason else "")
    )


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


def interventions(rows: Sequence[Intervention], count: int) -> str:
    at = now()
    body = table(
        ("WHEN", "TYPE", "ACTION", "TARGET", "AGENT", "RUN", "INSTANCE", "REASON"),
        (
            (
                ago(i.occurred_at, at),
                str(i.type),
                clip(i.action, 32),
                cell_target(i.target_type, i.target_id),
                i.agent_id,
                i.run_id,
                i.instance_id,
                clip(i.reason),
            )
            for i in rows
        ),
    )
    return _listing(body, len(rows), count, "no interventions")


def audit(rows: Sequence[AuditEntry], count: int) -> str:
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


def _count(n: int, noun: str) -> str:
    return plural(n, noun)


def _money(value: float) -> str:
    return f"${value:,.2f}"


def agents(rows: Sequence[Agent], count: int) -> str:
    at = now()
    body = table(
        ("AGENT", "HEALTH", "INSTANCES", "LAST SEEN", "EXECUTED", "REFUSED", "FAILED", "COST"),
        (
            (
                a.agent_id,
                a.health.upper() if a.health == "killed" else a.health,
                len(a.instances),
                ago(a.last_seen, at),
                a.executed,
                a.refused,
                a.failed,
                _money(a.cost_usd),
            )
            for a in rows
        ),
    )
    return _listing(body, len(rows), count, "no agents have reported yet")


def agent(a: Agent) -> str:
    at = now()
    lines = [
        f"agent      {a.agent_id}",
        f"health     {a.health}",
        f"last seen  {local(a.last_seen)} ({ago(a.last_seen, at)})",
        f"calls      {a.executed} executed, {a.refused} refused, {a.failed} failed",
        f"cost       {_money(a.cost_usd)} in all, {_money(a.cost_usd_today)} today",
    ]
    if a.kill_switch is not None:
        ks = a.kill_switch
        lines.append(
            f"killed     {ago(ks.killed_at, at)} by {ks.killed_by}"
            + (f": {ks.reason}" if ks.reason else "")
        )
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
                    "FAILED",
                    "COST",
                    "VERSION",
                    "ERROR",
                ),
                (
                    (
                        i.instance_id,
                        i.health,
                        i.status,
                        ago(i.last_seen, at),
                        i.run_id,
                        i.mission_id,
                        i.executed,
                        i.refused,
                        i.failed,
                        _money(i.cost_usd),
                        i.version,
                        clip(last_line(i.error), 40),
                    )
                    for i in a.instances
                ),
            )
        )
    return "\n".join(lines)


def key_agents(scopes: Sequence[str], agents: Sequence[str] | None) -> str:
    """What a key may speak for, in words: ``any agent`` for ``*``; blank if not an agent key."""
    if "agent" not in scopes:
        return ""
    if {"admin", "operator"} & set(scopes):
        return "any agent"
    if not agents:
        return "no agent (re-create with --agent)"
    return "any agent" if "*" in agents else ",".join(agents)


def keys(rows: Sequence[ApiKey], count: int) -> str:
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
                f"revoked {ago(k.revoked_at, at)}" if k.revoked_at else "active",
            )
            for k in rows
        ),
    )
    return _listing(body, len(rows), count, "no API keys")


# -- kill --wait ---------------------------------------------------------------------------------


# The words README uses: "acknowledged by 49/50 instances, slowest 41 ms".
def _acknowledged(a: Acks) -> str:
    return f"acknowledged by {a.acknowledged}/{_count(a.live, 'instance')}"


def acks_progress(a: Acks, elapsed: float) -> str:
    return f"{_acknowledged(a)} ({elapsed:.1f} s)"


def acks_done(a: Acks) -> str:
    if a.live == 0:
        return f"{_acknowledged(a)}: no live instance runs under this target"
    text = _acknowledged(a)
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
        f"{_acknowledged(a)} within {timeout:g} s"
        + (f"; waiting on {names}{more}" if names else "")
        + " (the kill itself is in force)"
    )


def _instance(instance_id: str, agent_id: str | None) -> str:
    return f"{instance_id} (agent {agent_id})" if agent_id else instance_id


# -- tail ----------------------------------------------------------------------------------------


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
    return f"watching {url}: {_count(len(active), 'active kill switch')} at version {version}"


def stream_event(event: StreamEvent) -> str | None:
    """One line per kill, revive or intervention; ``None`` for other events."""
    data = event.data
    if event.event in ("kill", "revive"):
        ks = data.get("kill_switch") or {}
        what = cell_target(ks.get("target_type"), ks.get("target_id"))
        version = data.get("version", event.id)
        if event.event == "kill":
            reason = f"  {clip(ks.get('reason'))}" if ks.get("reason") else ""
            return (
                f"{_when(ks.get('killed_at'))}  KILLED   {what}  by {ks.get('killed_by')}"
                f"  v{version}{reason}"
            )
        return (
            f"{_when(ks.get('revived_at'))}  REVIVED  {what}  by {ks.get('revived_by')}  v{version}"
        )
    if event.event == "intervention":
        kind = "BLOCKED" if data.get("type") == "HARD_BLOCK" else str(data.get("type"))
        scope = "  ".join(
            f"{name}={data[key]}"
            for key, name in (("agent_id", "agent"), ("run_id", "run"), ("instance_id", "instance"))
            if data.get(key)
        )
        reason = f"  {clip(data.get('reason'))}" if data.get("reason") else ""
        return (
            f"{_when(data.get('occurred_at'))}  {kind:<7}  {data.get('action')}  "
            f"{cell_target(data.get('target_type'), data.get('target_id'))}"
            + (f"  {scope}" if scope else "")
            + reason
        )
    return None
