"""``/interventions/`` and ``/ingest``: what the AgentSentinel SDK sends, in its own formats.

Both take the SDK's ``X-Sentinel-Agent-Id`` / ``X-Sentinel-Run-Id`` headers for identity, and
are bound like every report: a key bound to some agents writes for those agents only, and
every agent a request names (header, batch or entry) must be one of them.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import schemas as s
from ..fleet import Fleet
from ..sentinel import as_intervention, read_ledger
from ..store.sqlstore import SQLStore
from .call import Call


class SentinelHandlers:
    """Interventions and ledgers of AgentSentinel SDKs pointed at this server."""

    def __init__(self, store: SQLStore, fleet: Fleet) -> None:
        self.store = store
        self.fleet = fleet

    async def report_intervention(self, call: Call) -> BaseModel:
        body: s.SentinelInterventionIn = call.body
        said: s.SentinelHeaders = call.header_params
        binding = call.principal.binding
        agent, field = (body.agent_id, "agent_id")
        if agent is None and said.agent_id is not None:
            agent, field = said.agent_id, s.SENTINEL_AGENT_HEADER
        if binding is not None:
            if said.agent_id is not None:
                binding.require(s.SENTINEL_AGENT_HEADER, said.agent_id)
            binding.require(field, agent)
        intervention = as_intervention(body, agent_id=agent, run_id=body.run_id or said.run_id)
        created = await run_in_threadpool(self.store.add_interventions, call.org, [intervention])
        return s.SentinelInterventionAccepted(
            id=intervention.id, type=intervention.type.value, created=created == 1
        )

    async def ingest(self, call: Call) -> BaseModel:
        body: s.SentinelIngestIn = call.body
        said: s.SentinelHeaders = call.header_params
        batch = read_ledger(body, header_agent=said.agent_id)
        binding = call.principal.binding
        if binding is not None:
            for agent, field in batch.named.items():
                binding.require(field, agent)
            if batch.unattributed:
                binding.require("agent_id", None)
        result = await run_in_threadpool(
            lambda: self.fleet.ingest(call.org, batch, reporter=call.principal.actor)
        )
        return s.SentinelIngestAccepted(
            received=len(body.entries), created=result.created, unattributed=result.unattributed
        )
