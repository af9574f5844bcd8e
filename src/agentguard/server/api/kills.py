"""``/kill-switch/kill``, ``revive``, ``check`` and ``active``: the seed's kill switch."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...index import KillIndex
from ...protocol import VERSION_HEADER
from ...records import KillChange, utcnow
from ...targets import (
    check_organization_target,
    require_reason,
    validate_expiry,
    validate_target,
)
from ...telemetry import Telemetry
from .. import schemas as s
from ..approvals import ReviveApprovals
from ..fleet import Fleet
from ..inputs import as_public
from ..problems import ApiError
from ..store.sqlstore import SQLStore
from ..webhooks.events import ack_timeout_event
from .call import Call

logger = logging.getLogger("agentguard.server")
ACK_HEADER = "X-AgentGuard-Acknowledged"  # after ?wait=: live instances that applied the kill


class KillHandlers:
    """Kill, revive, check and list the active kill switches of the caller's organization."""

    def __init__(
        self,
        store: SQLStore,
        index: Callable[[str], KillIndex],
        telemetry: Telemetry,
        fleet: Fleet,
        *,
        require_reason: bool = False,
        operators_can_stop_all: bool = False,
        approvals: ReviveApprovals | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.telemetry = telemetry
        self.fleet = fleet
        # Refuse kills and revives without a reason (422 naming it).
        self.require_reason = require_reason
        self.approvals = approvals or ReviveApprovals()  # which revives need more people
        # An organization-wide stop (and its revive) needs admin, or operator if this is set.
        self.operators_can_stop_all = operators_can_stop_all

    def _may_stop_all(self, call: Call, target_type: str, target_id: str) -> None:
        """Refuse (403) an organization-wide stop or resume by a credential not allowed it,
        and (422) one naming another organization."""
        if target_type != "organization":
            return
        scopes = call.principal.scopes
        if "admin" not in scopes and not (self.operators_can_stop_all and "operator" in scopes):
            operator = " or 'operator'" if self.operators_can_stop_all else ""
            raise ApiError(
                "forbidden",
                f"stopping or resuming the whole organization needs the 'admin' scope{operator}"
                " (operators may too on a server started with --operators-can-stop-all); the "
                f"credential has {', '.join(sorted(scopes)) or 'no scopes'}",
                required_scope="admin",
            )
        check_organization_target(call.org, target_type, target_id)

    async def kill(self, call: Call) -> BaseModel:
        """Kill; with ``?wait=`` then wait for the live instances' acknowledgements."""
        body: s.KillRequest = call.body
        self._may_stop_all(call, body.target_type, body.target_id)
        if self.require_reason:
            require_reason(body.reason)
        expires_at = validate_expiry(body.expires_at, body.duration, utcnow())
        change = await run_in_threadpool(
            self.store.kill,
            call.org,
            body.target_type,
            body.target_id,
            reason=body.reason,
            actor=call.principal.actor,
            request_id=call.request_id,
            expires_at=expires_at,
            until=body.until,
        )
        self.telemetry.record_change(change, actor=call.principal.actor)
        call.headers[VERSION_HEADER] = str(change.version)
        query: s.KillQuery | None = call.query
        if query is not None and query.wait is not None:
            status = await self.fleet.wait_for_acks(
                call.org, body.target_type, body.target_id, query.wait
            )
            if status is not None:
                call.headers[ACK_HEADER] = f"{status.acknowledged}/{status.live}"
                if query.wait > 0 and status.acknowledged < status.live:
                    await self._ack_timeout(call, change, status, query.wait)
        return as_public(s.KillSwitchPublic, change.kill_switch)

    async def _ack_timeout(
        self, call: Call, change: KillChange, status: s.AcksPublic, waited: float
    ) -> None:
        """Queue ``ack.timeout``: the kill holds, but not every live instance said so in time."""
        event = ack_timeout_event(
            change,
            waited=waited,
            live=status.live,
            acknowledged=status.acknowledged,
            waiting_on=[
                {
                    "instance_id": i.instance_id,
                    "agent_id": i.agent_id,
                    "run_id": i.run_id,
                    "mission_id": i.mission_id,
                }
                for i in status.instances
                if not i.acknowledged
            ],
            requested_by=call.principal.actor,
            now=utcnow(),
        )
        try:
            await run_in_threadpool(self.store.queue_webhook_events, call.org, [event])
        except Exception as exc:  # the kill is committed and answered: do not fail it now
            logger.warning("agentguard: could not queue the ack.timeout webhook event: %s", exc)

    async def revive(self, call: Call) -> BaseModel:
        """Revive; where the approval rules want more people, ask for it instead (202)."""
        body: s.ReviveRequest = call.body
        self._may_stop_all(call, body.target_type, body.target_id)
        if self.require_reason:
            require_reason(body.reason, "revives")
        people = self.approvals.people_for(call.org, body.target_type, body.target_id)
        if people > 1:
            request = await run_in_threadpool(
                self.store.request_revive,
                call.org,
                body.target_type,
                body.target_id,
                actor=call.principal.actor,
                person=call.principal.user_id,
                people=people,
                ttl=self.approvals.ttl,
                reason=body.reason,
                request_id=call.request_id,
            )
            call.status = 202
            return as_public(s.ReviveRequestPublic, request)
        change = await run_in_threadpool(
            self.store.revive,
            call.org,
            body.target_type,
            body.target_id,
            actor=call.principal.actor,
            request_id=call.request_id,
            reason=body.reason,
        )
        self.telemetry.record_change(change, actor=call.principal.actor)
        call.headers[VERSION_HEADER] = str(change.version)
        return as_public(s.KillSwitchPublic, change.kill_switch)

    async def check(self, call: Call) -> BaseModel:
        query: s.CheckQuery = call.query
        target_type, target_id = validate_target(query.target_type, query.target_id)
        ks = self.index(call.org).get(target_type, target_id)
        return s.CheckResponse(
            is_killed=ks is not None,
            target_type=query.target_type,
            target_id=target_id,
            reason=ks.reason if ks else None,
            killed_at=ks.killed_at if ks else None,
        )

    async def active(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_active, call.org, skip=query.skip, limit=query.limit
        )
        return s.KillSwitchesPublic(
            data=[as_public(s.KillSwitchPublic, r) for r in rows], count=count
        )
