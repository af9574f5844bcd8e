"""``/drills``: start a drill and wait for its answer, list drills, and instances' answers."""

from __future__ import annotations

import logging

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import schemas as s
from ..auth.binding import AgentNotAllowedError
from ..drills import Drills
from ..inputs import as_public
from ..store.sqlstore import SQLStore
from .call import Call

logger = logging.getLogger("agentguard.server")


class DrillHandlers:
    """Operators start drills; agents' guards answer them; readers list them."""

    def __init__(self, drills: Drills, store: SQLStore) -> None:
        self.drills = drills
        self.store = store

    async def start(self, call: Call) -> BaseModel:
        """Drill a target: send, wait up to ``timeout`` for every live instance, judge."""
        body: s.DrillRequest = call.body
        drill = await self.drills.run(
            call.org,
            body.target_type,
            body.target_id,
            actor=call.principal.actor,
            timeout=body.timeout,
            request_id=call.request_id,
        )
        return as_public(s.DrillPublic, drill)

    async def list_drills(self, call: Call) -> BaseModel:
        query: s.DrillQuery = call.query

        def read() -> tuple[list[s.DrillPublic], int]:
            self.drills.finish_overdue()  # a drill whose process stopped before judging it
            found, count = self.store.list_drills(
                call.org,
                target_type=query.target_type,
                target_id=query.target_id,
                skip=query.skip,
                limit=query.limit,
            )
            return [as_public(s.DrillPublic, d) for d in found], count

        data, count = await run_in_threadpool(read)
        return s.DrillsPublic(data=data, count=count)

    async def ack(self, call: Call) -> BaseModel:
        """An instance rehearsed the drill's kill: record its answer (for its own agent only)."""
        path: s.DrillPath = call.path
        body: s.DrillAckIn = call.body
        binding = call.principal.binding
        try:
            if binding is not None:  # only the instance's own agent's key answers for it
                binding.require("agent_id", body.agent_id)
            expected = await run_in_threadpool(
                lambda: self.store.acknowledge_drill(
                    call.org,
                    path.drill_id,
                    body.instance_id,
                    now=self.drills.clock(),
                    binding=binding,
                )
            )
        except AgentNotAllowedError as refused:
            await run_in_threadpool(self._audit_refused, call, refused)
            raise
        if expected:
            self.drills.acknowledged(path.drill_id)
        return s.DrillAckAccepted(expected=expected)

    def _audit_refused(self, call: Call, refused: AgentNotAllowedError) -> None:
        path: s.DrillPath = call.path
        body: s.DrillAckIn = call.body
        logger.warning("agentguard: refused a drill ack by %s: %s", call.principal.actor, refused)
        self.store.audit(
            call.org,
            action="ack.refused",
            actor=call.principal.actor,
            target_type="agent" if body.agent_id else None,
            target_id=body.agent_id,
            detail=f"instance {body.instance_id!r}, drill {path.drill_id}: {refused}",
            request_id=call.request_id,
        )
