"""Every JSON endpoint of the API, declared once: what it reads, returns, requires and raises.

The table drives the Starlette routes (:mod:`.routes`), the OpenAPI document (:mod:`.openapi`)
and the bad-input test matrix alike. The change stream is not a JSON endpoint: see :mod:`.stream`.
To add an endpoint, write its handler as a method of its resource's handler class, declare it
here, and give the class what it uses in ``KillSwitchServer``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from ...protocol import API
from .. import schemas as s
from .audit import AuditHandlers
from .call import Handler
from .checkpoints import CheckpointHandlers
from .drills import DrillHandlers
from .fleet import FleetHandlers, HeartbeatAnswer
from .interventions import InterventionHandlers
from .keys import KeyHandlers
from .kills import KillHandlers
from .revives import ReviveRequestHandlers
from .runs import RunHandlers
from .sentinel import SentinelHandlers
from .series import SeriesHandlers
from .state import KillStatePublic, KillStateReader
from .webhooks import WebhookHandlers


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One operation of the API."""

    method: str
    path: str
    operation_id: str
    summary: str
    permission: str
    response: type[BaseModel]
    handler: Handler
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    header_params: type[BaseModel] | None = None  # request headers, by their fields' aliases
    status: int = 200  # of a successful answer
    # Other successful answers the handler may give instead: (status, model, description).
    alternatives: tuple[tuple[int, type[BaseModel], str], ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    versioned: bool = False  # answers with the change's version in VERSION_HEADER
    conditional: bool = False  # answers with an ETag; If-None-Match of the same tag gets 304

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status this endpoint can answer with."""
        codes = {401, 403, 503, *self.errors}  # 503: the database is unreachable
        if self.query or self.body or self.path_params or self.header_params:
            codes.add(422)
        if self.body:
            codes.update((400, 413, 415))
        return tuple(sorted(codes))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/kill",
        operation_id="kill",
        summary="Kill a target",
        permission="kill",
        response=s.KillSwitchPublic,
        handler=KillHandlers.kill,
        body=s.KillRequest,
        query=s.KillQuery,
        errors=(409,),
        versioned=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/revive",
        operation_id="revive",
        summary="Revive a killed target",
        permission="kill",
        response=s.KillSwitchPublic,
        handler=KillHandlers.revive,
        body=s.ReviveRequest,
        alternatives=(
            (
                202,
                s.ReviveRequestPublic,
                "Where revives of the target need approval: a pending revive request; the "
                "kill stays until enough other people approve it",
            ),
        ),
        errors=(404, 409),
        versioned=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/kill-switch/revive-requests",
        operation_id="list_revive_requests",
        summary="Revive requests, newest first (default: the pending ones)",
        permission="read",
        response=s.ReviveRequestsPublic,
        handler=ReviveRequestHandlers.list_requests,
        query=s.ReviveRequestQuery,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/revive-requests/{{request_id}}/approve",
        operation_id="approve_revive",
        summary="Approve a revive request (not your own); the last approval revives the kill",
        permission="kill",
        response=s.ReviveRequestPublic,
        handler=ReviveRequestHandlers.approve,
        path_params=s.ReviveRequestPath,
        body=s.ReviveDecision,
        errors=(404, 409),
        tags=("kill-switch",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/revive-requests/{{request_id}}/reject",
        operation_id="reject_revive",
        summary="Reject a revive request (the requester may withdraw their own); the kill stays",
        permission="kill",
        response=s.ReviveRequestPublic,
        handler=ReviveRequestHandlers.reject,
        path_params=s.ReviveRequestPath,
        body=s.ReviveDecision,
        errors=(404, 409),
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/kill-switch/check",
        operation_id="check",
        summary="Whether a target is killed",
        permission="check",
        response=s.CheckResponse,
        handler=KillHandlers.check,
        query=s.CheckQuery,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/kill-switch/state",
        operation_id="kill_state",
        summary="Every active kill switch and the organization's version (for polling guards)",
        permission="check",
        response=KillStatePublic,
        handler=KillStateReader.state,
        conditional=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/kill-switch/active",
        operation_id="list_active",
        summary="Active kill switches, newest first",
        permission="check",
        response=s.KillSwitchesPublic,
        handler=KillHandlers.active,
        query=s.PageQuery,
        tags=("kill-switch",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/keys",
        operation_id="create_key",
        summary="Create an API key (its secret is shown once)",
        permission="keys",
        response=s.ApiKeyCreated,
        handler=KeyHandlers.create,
        body=s.ApiKeyCreate,
        tags=("keys",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/keys",
        operation_id="list_keys",
        summary="API keys, newest first",
        permission="keys",
        response=s.ApiKeysPublic,
        handler=KeyHandlers.list_keys,
        query=s.PageQuery,
        tags=("keys",),
    ),
    Endpoint(
        method="DELETE",
        path=f"{API}/keys/{{key_id}}",
        operation_id="revoke_key",
        summary="Revoke an API key",
        permission="keys",
        response=s.ApiKeyPublic,
        handler=KeyHandlers.revoke,
        path_params=s.KeyPath,
        errors=(404, 409),
        tags=("keys",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/audit",
        operation_id="list_audit",
        summary="Audit log, newest first",
        permission="read",
        response=s.AuditEntriesPublic,
        handler=AuditHandlers.list_audit,
        query=s.AuditQuery,
        tags=("audit",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/interventions",
        operation_id="report_interventions",
        summary="Report up to 1,000 interventions (idempotent per id)",
        permission="report",
        response=s.InterventionsAccepted,
        handler=InterventionHandlers.report,
        body=s.InterventionsBatch,
        tags=("interventions",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/interventions",
        operation_id="list_interventions",
        summary="Interventions, newest first",
        permission="read",
        response=s.InterventionsPublic,
        handler=InterventionHandlers.list_interventions,
        query=s.InterventionQuery,
        tags=("interventions",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/interventions/counts",
        operation_id="intervention_counts",
        summary="Intervention counts per target and type",
        permission="read",
        response=s.InterventionCountsPublic,
        handler=InterventionHandlers.counts,
        query=s.InterventionCountsQuery,
        tags=("interventions",),
    ),
    # -- fleet: heartbeats, acknowledgements, agents, checkpoints ---------------------------------
    Endpoint(
        method="POST",
        path=f"{API}/heartbeats",
        operation_id="heartbeat",
        summary="Report an instance's heartbeat; answers its health and kill state",
        permission="report",
        response=HeartbeatAnswer,
        handler=FleetHandlers.heartbeat,
        body=s.HeartbeatIn,
        errors=(409,),
        tags=("fleet",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/ack",
        operation_id="acknowledge",
        summary="Acknowledge that an instance applied every change up to a version",
        permission="report",
        response=s.AckAccepted,
        handler=FleetHandlers.ack,
        body=s.AckIn,
        errors=(409,),
        tags=("kill-switch",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/kill-switch/acks",
        operation_id="acknowledge_batch",
        summary="Acknowledge for many instances at once (a process's guards), all or none",
        permission="report",
        response=s.AckBatchAccepted,
        handler=FleetHandlers.ack_batch,
        body=s.AckBatchIn,
        errors=(409,),
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/kill-switch/acks",
        operation_id="list_acks",
        summary="Which live instances have applied a target's active kill, and how fast",
        permission="read",
        response=s.AcksPublic,
        handler=FleetHandlers.acks,
        query=s.AcksQuery,
        errors=(404,),
        tags=("kill-switch",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/agents",
        operation_id="list_agents",
        summary="Agents with their instances, health, totals and cost",
        permission="read",
        response=s.AgentsPublic,
        handler=FleetHandlers.agents,
        query=s.PageQuery,
        tags=("fleet",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/agents/{{agent_id}}",
        operation_id="get_agent",
        summary="One agent with its instances, health, totals and cost",
        permission="read",
        response=s.AgentPublic,
        handler=FleetHandlers.agent,
        path_params=s.AgentPath,
        errors=(404,),
        tags=("fleet",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/runs/{{run_id}}/finish",
        operation_id="finish_run",
        summary="A run is over: its kill made until the run ends ends with it",
        permission="report",
        response=s.RunFinishedPublic,
        handler=RunHandlers.finish,
        path_params=s.RunPath,
        tags=("fleet",),
    ),
    # -- the AgentSentinel SDK's own paths and formats (agentguard.server.sentinel) -------------
    Endpoint(
        method="POST",
        path=f"{API}/interventions/",
        operation_id="report_sentinel_intervention",
        summary="Report one AgentSentinel SDK intervention record (idempotent)",
        permission="report",
        response=s.SentinelInterventionAccepted,
        handler=SentinelHandlers.report_intervention,
        body=s.SentinelInterventionIn,
        header_params=s.SentinelHeaders,
        status=201,
        tags=("agentsentinel",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/ingest",
        operation_id="ingest_sentinel_ledger",
        summary="Count an AgentSentinel SDK ledger batch into the fleet's usage (idempotent)",
        permission="report",
        response=s.SentinelIngestAccepted,
        handler=SentinelHandlers.ingest,
        body=s.SentinelIngestIn,
        header_params=s.SentinelHeaders,
        status=202,
        tags=("agentsentinel",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/agents/{{agent_id}}/series",
        operation_id="agent_series",
        summary="An agent's calls, refusals, cancellations, cost, kills and revives over time",
        permission="read",
        response=s.SeriesPublic,
        handler=SeriesHandlers.agent_series,
        path_params=s.AgentPath,
        query=s.SeriesQuery,
        errors=(404,),
        tags=("fleet",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/series",
        operation_id="org_series",
        summary="The organization's calls, refusals, cancellations, cost, kills and revives "
        "over time",
        permission="read",
        response=s.SeriesPublic,
        handler=SeriesHandlers.org_series,
        query=s.SeriesQuery,
        tags=("fleet",),
    ),
    Endpoint(
        method="PUT",
        path=f"{API}/checkpoints/{{key}}",
        operation_id="put_checkpoint",
        summary="Store a JSON checkpoint (at most 256 KiB)",
        permission="report",
        response=s.CheckpointPublic,
        handler=CheckpointHandlers.put,
        body=s.CheckpointIn,
        path_params=s.CheckpointPath,
        tags=("fleet",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/checkpoints/{{key}}",
        operation_id="get_checkpoint",
        summary="The last checkpoint stored under a key",
        permission="report",
        response=s.CheckpointPublic,
        handler=CheckpointHandlers.get,
        path_params=s.CheckpointPath,
        errors=(404,),
        tags=("fleet",),
    ),
    # -- webhooks -------------------------------------------------------------------------------
    Endpoint(
        method="POST",
        path=f"{API}/webhooks",
        operation_id="create_webhook",
        summary="Register a webhook (a standard one's signing secret is shown once)",
        permission="webhooks",
        response=s.WebhookCreated,
        handler=WebhookHandlers.create,
        body=s.WebhookCreate,
        tags=("webhooks",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/webhooks",
        operation_id="list_webhooks",
        summary="Webhooks, newest first, with their pending deliveries and latest attempt",
        permission="webhooks",
        response=s.WebhooksPublic,
        handler=WebhookHandlers.list_webhooks,
        query=s.PageQuery,
        tags=("webhooks",),
    ),
    Endpoint(
        method="DELETE",
        path=f"{API}/webhooks/{{webhook_id}}",
        operation_id="delete_webhook",
        summary="Remove a webhook and its delivery log",
        permission="webhooks",
        response=s.WebhookPublic,
        handler=WebhookHandlers.delete,
        path_params=s.WebhookPath,
        errors=(404,),
        tags=("webhooks",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/webhooks/{{webhook_id}}/test",
        operation_id="test_webhook",
        summary="Queue a webhook.test event for one webhook",
        permission="webhooks",
        response=s.WebhookDeliveryPublic,
        handler=WebhookHandlers.test,
        path_params=s.WebhookPath,
        errors=(404,),
        tags=("webhooks",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/webhooks/{{webhook_id}}/deliveries",
        operation_id="list_webhook_deliveries",
        summary="A webhook's delivery log, newest first",
        permission="webhooks",
        response=s.WebhookDeliveriesPublic,
        handler=WebhookHandlers.deliveries,
        path_params=s.WebhookPath,
        query=s.WebhookDeliveryQuery,
        errors=(404,),
        tags=("webhooks",),
    ),
    # -- drills ---------------------------------------------------------------------------------
    Endpoint(
        method="POST",
        path=f"{API}/drills",
        operation_id="start_drill",
        summary="Drill a target: every live instance rehearses its kill and answers, refusing "
        "nothing; waits up to the timeout and answers how many did",
        permission="drill",
        response=s.DrillPublic,
        handler=DrillHandlers.start,
        body=s.DrillRequest,
        tags=("drills",),
    ),
    Endpoint(
        method="GET",
        path=f"{API}/drills",
        operation_id="list_drills",
        summary="Drills and their results, newest first",
        permission="read",
        response=s.DrillsPublic,
        handler=DrillHandlers.list_drills,
        query=s.DrillQuery,
        tags=("drills",),
    ),
    Endpoint(
        method="POST",
        path=f"{API}/drills/{{drill_id}}/ack",
        operation_id="acknowledge_drill",
        summary="Answer a drill: the instance rehearsed its kill on its kill index",
        permission="report",
        response=s.DrillAckAccepted,
        handler=DrillHandlers.ack,
        body=s.DrillAckIn,
        path_params=s.DrillPath,
        errors=(404,),
        tags=("drills",),
    ),
)
