"""``/kill-switch/revive-requests``: governed revive (list, approve, reject).

``POST /kill-switch/revive`` itself (:mod:`.kills`) creates the request where the server's
:class:`~agentguard.server.approvals.ReviveApprovals` say a revive needs more than one person.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...protocol import VERSION_HEADER
from ...targets import require_reason
from ...telemetry import Telemetry
from .. import schemas as s
from ..inputs import as_public
from ..store.sqlstore import SQLStore
from .call import Call


class ReviveRequestHandlers:
    """List, approve and reject the revive requests of the caller's organization."""

    def __init__(
        self, store: SQLStore, telemetry: Telemetry, *, require_reason: bool = False
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.require_reason = require_reason  # approvals and rejections need a reason too

    async def list_requests(self, call: Call) -> BaseModel:
        query: s.ReviveRequestQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_revive_requests,
            call.org,
            status=None if query.status == "all" else query.status,
            skip=query.skip,
            limit=query.limit,
        )
        return s.ReviveRequestsPublic(
            data=[as_public(s.ReviveRequestPublic, r) for r in rows], count=count
        )

    async def approve(self, call: Call) -> BaseModel:
        """Approve; the approval that completes the request revives the kill."""
        body: s.ReviveDecision = call.body
        if self.require_reason:
            require_reason(body.reason, "approvals")
        request, change = await run_in_threadpool(
            self.store.approve_revive,
            call.org,
            call.path.request_id,
            actor=call.principal.actor,
            person=call.principal.user_id,
            reason=body.reason,
            request_id=call.request_id,
        )
        if change is not None:
            self.telemetry.record_change(change, actor=change.kill_switch.revived_by or "")
            call.headers[VERSION_HEADER] = str(change.version)
        return as_public(s.ReviveRequestPublic, request)

    async def reject(self, call: Call) -> BaseModel:
        body: s.ReviveDecision = call.body
        if self.require_reason:
            require_reason(body.reason, "rejections")
        request = await run_in_threadpool(
            self.store.reject_revive,
            call.org,
            call.path.request_id,
            actor=call.principal.actor,
            reason=body.reason,
            request_id=call.request_id,
        )
        return as_public(s.ReviveRequestPublic, request)
