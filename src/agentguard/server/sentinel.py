"""The AgentSentinel SDK's records, read as agentguard's: interventions, usage and instances.

``agentsentinel-sdk`` (0.4) pointed at agentguard (``platform_url``, an agentguard API key as
its token) checks kills with ``GET /kill-switch/check`` (the seed contract, answered as it is)
and sends two more things, which land here:

- each intervention record, one per ``POST /api/v1/interventions/``: stored as one of our
  interventions. A refused call (outcome ``blocked``, ``escalated`` or
  ``rejected_after_review``) is a ``HARD_BLOCK``; one that ran or was changed (``warned``,
  ``modified``, ``approved_after_review``) is ``OBSERVED``. Its target is the tool (the action
  name): the SDK's own policy refused it, not a kill. Its id is derived from its content, so a
  record the SDK sends again is stored once.
- its ledger, ``POST /api/v1/ingest`` with ``run_id``, ``entries`` and ``agent_id``: each new
  entry (by its id) counts as one executed call (``success``), one executed and failed call
  (``error``) or one refused call (``blocked``, ``rejected``) of its agent, and the cost of
  an executed call is spent; replays count nothing. That is the usage heartbeats feed, so the
  fleet and the server rules see it. Each (agent, run) is an instance of the fleet.

Identity comes from the most specific place that names it: the entry or record, then the
batch, then the ``X-Sentinel-Agent-Id`` / ``X-Sentinel-Run-Id`` headers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..records import Intervention, InterventionType
from ..targets import MAX_REASON_LENGTH
from . import schemas as s
from .store.ledger import LedgerGroup, LedgerItem

# Seconds between the SDK's ledger flushes (its default): an instance's heartbeat interval.
SENTINEL_INTERVAL = 10.0
_REFUSED = frozenset(("blocked", "escalated", "rejected_after_review"))
_INSTANCE_PREFIX = "agentsentinel:"
_MAX_ID = 256


def instance_of(agent_id: str, run_id: str) -> str:
    """The fleet instance of an SDK run of an agent (a digest when the ids are long)."""
    readable = f"{_INSTANCE_PREFIX}{agent_id}:{run_id}"
    if len(readable) <= _MAX_ID:
        return readable
    digest = hashlib.sha256(f"{agent_id}\x00{run_id}".encode()).hexdigest()[:40]
    return f"{_INSTANCE_PREFIX}{digest}"


def as_intervention(
    record: s.SentinelInterventionIn, *, agent_id: str | None, run_id: str | None
) -> Intervention:
    """One SDK intervention record as one of our interventions."""
    canonical = json.dumps(
        {"record": record.model_dump(mode="json"), "agent_id": agent_id, "run_id": run_id},
        sort_keys=True,
        separators=(",", ":"),
    )
    refused = record.outcome in _REFUSED
    return Intervention(
        id="agentsentinel-" + hashlib.sha256(canonical.encode()).hexdigest()[:40],
        type=InterventionType.HARD_BLOCK if refused else InterventionType.OBSERVED,
        action=record.action_name,
        target_type="tool",
        target_id=record.action_name,
        reason=_reason(record),
        agent_id=agent_id,
        run_id=run_id,
        mission_id=record.mission_id,
        instance_id=instance_of(agent_id, run_id) if agent_id and run_id else None,
        occurred_at=record.timestamp,
    )


def _reason(record: s.SentinelInterventionIn) -> str:
    """``AgentSentinel budget_exceeded (blocked), policy p: <the SDK's reason>``, bounded."""
    text = f"AgentSentinel {record.intervention_type} ({record.outcome})"
    if record.policy_name:
        text += f", policy {record.policy_name}"
    if record.reason:
        text += f": {record.reason}"
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 1] + "…"
    return text


@dataclass(frozen=True)
class LedgerBatch:
    """A batch read for the store: entries by (agent, run), those naming no agent, and each
    agent the batch names with the first field naming it (for the key's agent binding)."""

    groups: list[LedgerGroup]
    unattributed: list[LedgerItem]
    named: dict[str, str]


def read_ledger(batch: s.SentinelIngestIn, *, header_agent: str | None) -> LedgerBatch:
    """Each entry's agent, run and usage; an id repeated in the batch counts once."""
    named: dict[str, str] = {}
    if header_agent:
        named[header_agent] = s.SENTINEL_AGENT_HEADER
    if batch.agent_id:
        named.setdefault(batch.agent_id, "agent_id")
    by_instance: dict[tuple[str, str], list[LedgerItem]] = {}
    unattributed: list[LedgerItem] = []
    seen: set[str] = set()
    for i, entry in enumerate(batch.entries):
        if entry.agent_id:
            named.setdefault(entry.agent_id, f"entries.{i}.agent_id")
        if entry.id in seen:
            continue
        seen.add(entry.id)
        agent = entry.agent_id or batch.agent_id or header_agent
        item = LedgerItem(
            id=entry.id,
            agent_id=agent,
            run_id=entry.run_id or batch.run_id,
            mission_id=entry.mission_id or batch.mission_id,
            usage=_usage(entry),
        )
        if agent is None:
            unattributed.append(item)
        else:
            by_instance.setdefault((agent, item.run_id), []).append(item)
    groups = [
        LedgerGroup(instance_of(agent, run), agent, run, items)
        for (agent, run), items in by_instance.items()
    ]
    return LedgerBatch(groups, unattributed, named)


def _usage(entry: s.SentinelLedgerEntry) -> tuple[int, int, int, float]:
    """(executed, refused, failed, cost) of one entry."""
    if entry.outcome == "success":
        return 1, 0, 0, entry.cost_usd
    if entry.outcome == "error":
        return 1, 0, 1, entry.cost_usd
    if entry.outcome in ("blocked", "rejected"):
        return 0, 1, 0, 0.0
    return 0, 0, 0, 0.0  # replayed: the body did not run, nothing was spent
