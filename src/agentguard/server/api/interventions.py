"""``/interventions``: report interventions in batches, list them, count them."""

from __future__ import annotations

import logging

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...records import Intervention
from ...wording import plural
from .. import schemas as s
from ..inputs import as_public
from ..store.sqlstore import SQLStore
from .call import Call

logger = logging.getLogger("agentguard.server")


class InterventionHandlers:
    """Interventions reported by guards (an agent key's only for its own agents)."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def report(self, call: Call) -> BaseModel:
        body: s.InterventionsBatch = call.body
        binding = call.principal.binding
        if binding is not None:  # an agent key reports only for the agents it speaks for
            for i, iv in enumerate(body.interventions):
                binding.require(f"interventions.{i}.agent_id", iv.agent_id)
                if iv.target_type == "agent":
                    binding.require(f"interventions.{i}.target_id", iv.target_id)
        items = [Intervention(**iv.model_dump()) for iv in body.interventions]
        created = await run_in_threadpool(
            self.store.add_interventions, call.org, items, reporter=call.principal.actor
        )
        if body.dropped:
            await run_in_threadpool(self._record_dropped, call, body.dropped)
        return s.InterventionsAccepted(received=len(items), created=created)

    def _record_dropped(self, call: Call, dropped: int) -> None:
        """A reporter lost interventions to a full buffer: say so in the audit log, loudly."""
        logger.warning(
            "%s dropped %s (its buffer was full)",
            call.principal.actor,
            plural(dropped, "intervention"),
        )
        self.store.audit(
            call.org,
            action="interventions.dropped",
            actor=call.principal.actor,
            detail=(f"{plural(dropped, 'intervention')} dropped by a full buffer before reporting"),
            request_id=call.request_id,
        )

    async def list_interventions(self, call: Call) -> BaseModel:
        q: s.InterventionQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_interventions,
            call.org,
            target_type=q.target_type,
            target_id=q.target_id,
            type=q.type,
            action=q.action,
            since=q.since,
            skip=q.skip,
            limit=q.limit,
        )
        return s.InterventionsPublic(
            data=[as_public(s.InterventionPublic, r) for r in rows], count=count
        )

    async def counts(self, call: Call) -> BaseModel:
        q: s.InterventionCountsQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.intervention_counts,
            call.org,
            target_type=q.target_type,
            type=q.type,
            since=q.since,
            skip=q.skip,
            limit=q.limit,
        )
        return s.InterventionCountsPublic(
            data=[s.InterventionCount(**r) for r in rows], count=count
        )
