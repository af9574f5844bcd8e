"""``/heartbeats``, ``/kill-switch/ack``, ``/kill-switch/acks`` and ``/agents``: the fleet."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...protocol import HealthName, HeartbeatReport
from ...scope import Scope
from .. import schemas as s
from ..auth.binding import AgentNotAllowedError
from ..fleet import AckBatchError, Fleet
from ..problems import ApiError
from ..store.killstate import VersionAheadError
from ..store.sqlstore import SQLStore
from .call import Call
from .state import KillStatePublic, public_state

logger = logging.getLogger("agentguard.server")


class HeartbeatAnswer(BaseModel):
    """The instance's health and kill state; ``snapshot`` when its version is behind."""

    health: HealthName
    version: int
    killed: bool
    reason: str | None = None
    snapshot: KillStatePublic | None = None


@contextlib.contextmanager
def _version_conflict() -> Iterator[None]:
    try:
        yield
    except VersionAheadError as exc:
        raise ApiError("conflict", str(exc), field="version") from None


class FleetHandlers:
    """Heartbeats and acknowledgements from instances; agents and acks for operators."""

    def __init__(self, fleet: Fleet, store: SQLStore) -> None:
        self.fleet = fleet
        self.store = store  # for the audit record of a refused acknowledgement

    async def heartbeat(self, call: Call) -> BaseModel:
        body: s.HeartbeatIn = call.body
        binding = call.principal.binding
        if binding is not None:  # the heartbeat and the cost in it are for one of its agents
            binding.require("agent_id", body.agent_id)
        report = HeartbeatReport(**body.model_dump())
        with _version_conflict():
            reply = await run_in_threadpool(
                lambda: self.fleet.heartbeat(
                    call.org, report, binding=binding, reporter=call.principal.actor
                )
            )
        return HeartbeatAnswer(
            health=reply.health,
            version=reply.version,
            killed=reply.killed,
            reason=reply.reason,
            snapshot=public_state(reply.snapshot) if reply.snapshot is not None else None,
        )

    async def ack(self, call: Call) -> BaseModel:
        body: s.AckIn = call.body
        scope = Scope(body.agent_id, body.run_id, body.mission_id)
        binding = call.principal.binding
        try:
            if binding is not None:  # only the instance's own agent's key acknowledges for it
                binding.require("agent_id", body.agent_id)
            with _version_conflict():
                count = await self.fleet.acknowledge(
                    call.org, body.instance_id, body.version, scope, binding
                )
        except AgentNotAllowedError as refused:
            await run_in_threadpool(self._audit_refused_ack, call, refused)
            raise
        return s.AckAccepted(acknowledged=count)

    async def ack_batch(self, call: Call) -> BaseModel:
        """Many acknowledgements (a process's guards) in one request, stored all or none."""
        body: s.AckBatchIn = call.body
        binding = call.principal.binding
        try:
            if binding is not None:  # every one for the key's own agents, as a single ack
                for i, ack in enumerate(body.acks):
                    binding.require(f"acks.{i}.agent_id", ack.agent_id)
            try:
                counts = await self.fleet.acknowledge_batch(
                    call.org,
                    [
                        (a.instance_id, a.version, Scope(a.agent_id, a.run_id, a.mission_id))
                        for a in body.acks
                    ],
                    binding,
                )
            except AckBatchError as exc:
                field = f"acks.{exc.position}.{getattr(exc.error, 'field', 'version')}"
                if isinstance(exc.error, AgentNotAllowedError):
                    raise AgentNotAllowedError(field, f"acks.{exc.position}.{exc.error}") from None
                if isinstance(exc.error, VersionAheadError):
                    message = f"acks.{exc.position}: {exc.error}"
                    raise ApiError("conflict", message, field=field) from None
                raise exc.error from None
        except AgentNotAllowedError as refused:
            await run_in_threadpool(self._audit_refused_batch, call, refused)
            raise
        return s.AckBatchAccepted(acknowledged=sum(counts), each=counts)

    def _audit_refused_ack(self, call: Call, refused: AgentNotAllowedError) -> None:
        body: s.AckIn = call.body
        logger.warning("agentguard: refused an ack by %s: %s", call.principal.actor, refused)
        self.store.audit(
            call.org,
            action="ack.refused",
            actor=call.principal.actor,
            target_type="agent" if body.agent_id else None,
            target_id=body.agent_id,
            detail=f"instance {body.instance_id!r}, version {body.version}: {refused}",
            request_id=call.request_id,
        )

    def _audit_refused_batch(self, call: Call, refused: AgentNotAllowedError) -> None:
        body: s.AckBatchIn = call.body
        logger.warning(
            "agentguard: refused a batch of acks by %s: %s", call.principal.actor, refused
        )
        position = int(refused.field.split(".")[1])
        ack = body.acks[position]
        self.store.audit(
            call.org,
            action="ack.refused",
            actor=call.principal.actor,
            target_type="agent" if ack.agent_id else None,
            target_id=ack.agent_id,
            detail=(
                f"a batch of {len(body.acks)} (none stored); instance {ack.instance_id!r}, "
                f"version {ack.version}: {refused}"
            ),
            request_id=call.request_id,
        )

    async def acks(self, call: Call) -> BaseModel:
        query: s.AcksQuery = call.query
        status = await run_in_threadpool(
            self.fleet.acks, call.org, query.target_type, query.target_id
        )
        if status is None:
            raise ApiError(
                "not_found", f"{query.target_type} {query.target_id!r} has no active kill switch"
            )
        return status

    async def agents(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        found = await run_in_threadpool(self.fleet.agents, call.org)
        return s.AgentsPublic(data=found[query.skip : query.skip + query.limit], count=len(found))

    async def agent(self, call: Call) -> BaseModel:
        path: s.AgentPath = call.path
        found = await run_in_threadpool(self.fleet.agents, call.org, path.agent_id)
        if not found:
            raise ApiError(
                "not_found", f"no heartbeats from agent {path.agent_id!r}", field="agent_id"
            )
        return found[0]
