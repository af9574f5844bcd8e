"""The HTTP API: each endpoint declared once, with what it reads, returns, requires and raises.

The declarations drive both the Starlette routes and the OpenAPI document.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.authentication import AuthenticationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..records import Intervention
from ..targets import require_reason
from ..wording import plural
from . import fleet, stream
from . import schemas as s
from .auth.principal import Principal, authenticate, required_scope
from .inputs import as_public, dump, parse_body, parse_path, parse_query
from .problems import ApiError, from_exception

if TYPE_CHECKING:
    from .app import KillSwitchServer

logger = logging.getLogger("agentguard.server")

API = "/api/v1"
VERSION_HEADER = "X-AgentGuard-Version"  # the organization's kill-state version after a change
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Call:
    """One authenticated, validated request."""

    request: Request
    principal: Principal
    request_id: str
    query: Any = None
    body: Any = None
    path: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def org(self) -> str:
        return self.principal.organization_id


Handler = Callable[["Api", Call], Awaitable[BaseModel]]


@dataclass(frozen=True)
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
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=())
    versioned: bool = False  # answers with the change's version in VERSION_HEADER
    conditional: bool = False  # answers with an ETag; If-None-Match of the same tag gets 304

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status this endpoint can answer with."""
        codes = {401, 403, 503, *self.errors}  # 503: the database is unreachable
        if self.query or self.body or self.path_params:
            codes.add(422)
        if self.body:
            codes.update((400, 413, 415))
        return tuple(sorted(codes))


class Api:
    """The handlers, bound to one server."""

    def __init__(self, server: KillSwitchServer) -> None:
        self.server = server

    # -- kill switch --------------------------------------------------------------------------

    async def kill(self, call: Call) -> BaseModel:
        body: s.KillRequest = call.body
        if self.server.require_reason:
            require_reason(body.reason)
        change = await run_in_threadpool(
            self.server.store.kill,
            call.org,
            body.target_type,
            body.target_id,
            reason=body.reason,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        self.server.telemetry.record_change(change, actor=call.principal.actor)
        call.headers[VERSION_HEADER] = str(change.version)
        return as_public(s.KillSwitchPublic, change.kill_switch)

    async def revive(self, call: Call) -> BaseModel:
        body: s.ReviveRequest = call.body
        change = await run_in_threadpool(
            self.server.store.revive,
            call.org,
            body.target_type,
            body.target_id,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        self.server.telemetry.record_change(change, actor=call.principal.actor)
        call.headers[VERSION_HEADER] = str(change.version)
        return as_public(s.KillSwitchPublic, change.kill_switch)

    async def check(self, call: Call) -> BaseModel:
        query: s.CheckQuery = call.query
        ks = self.server.index(call.org).get(query.target_type, query.target_id)
        return s.CheckResponse(
            is_killed=ks is not None,
            target_type=query.target_type,
            target_id=query.target_id,
            reason=ks.reason if ks else None,
            killed_at=ks.killed_at if ks else None,
        )

    async def active(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        rows, count = await run_in_threadpool(
            self.server.store.list_active, call.org, skip=query.skip, limit=query.limit
        )
        return s.KillSwitchesPublic(
            data=[as_public(s.KillSwitchPublic, r) for r in rows], count=count
        )

    # -- API keys -----------------------------------------------------------------------------

    async def create_key(self, call: Call) -> BaseModel:
        body: s.ApiKeyCreate = call.body
        key, secret = await run_in_threadpool(
            self.server.keys.create,
            call.org,
            owner=body.owner or call.principal.user_id,
            scopes=body.scopes,
            name=body.name,
            agents=body.agents,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        return s.ApiKeyCreated(**key.model_dump(), secret=secret)

    async def list_keys(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        keys, count = await run_in_threadpool(
            self.server.keys.list, call.org, skip=query.skip, limit=query.limit
        )
        return s.ApiKeysPublic(data=[as_public(s.ApiKeyPublic, k) for k in keys], count=count)

    async def revoke_key(self, call: Call) -> BaseModel:
        path: s.KeyPath = call.path
        key = await run_in_threadpool(
            self.server.keys.revoke,
            call.org,
            path.key_id,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        return as_public(s.ApiKeyPublic, key)

    # -- audit and interventions -------------------------------------------------------------

    async def audit(self, call: Call) -> BaseModel:
        q: s.AuditQuery = call.query
        rows, count = await run_in_threadpool(
            self.server.store.list_audit,
            call.org,
            action=q.action,
            target_type=q.target_type,
            target_id=q.target_id,
            since=q.since,
            skip=q.skip,
            limit=q.limit,
        )
        return s.AuditEntriesPublic(
            data=[as_public(s.AuditEntryPublic, r) for r in rows], count=count
        )

    def _record_dropped(self, call: Call, dropped: int) -> None:
        """A reporter lost interventions to a full buffer: say so in the audit log, loudly."""
        logger.warning(
            "%s dropped %s (its buffer was full)",
            call.principal.actor,
            plural(dropped, "intervention"),
        )
        with self.server.database.write() as conn:
            self.server.store.write_audit(
                conn,
                call.org,
                action="interventions.dropped",
                actor=call.principal.actor,
                detail=(
                    f"{plural(dropped, 'intervention')} dropped by a full buffer before reporting"
                ),
                request_id=call.request_id,
            )

    async def report_interventions(self, call: Call) -> BaseModel:
        body: s.InterventionsBatch = call.body
        binding = call.principal.binding
        if binding is not None:  # an agent key reports only for the agents it speaks for
            for i, iv in enumerate(body.interventions):
                binding.require(f"interventions.{i}.agent_id", iv.agent_id)
                if iv.target_type == "agent":
                    binding.require(f"interventions.{i}.target_id", iv.target_id)
        items = [Intervention(**iv.model_dump()) for iv in body.interventions]
        created = await run_in_threadpool(self.server.store.add_interventions, call.org, items)
        if body.dropped:
            await run_in_threadpool(self._record_dropped, call, body.dropped)
        return s.InterventionsAccepted(received=len(items), created=created)

    async def interventions(self, call: Call) -> BaseModel:
        q: s.InterventionQuery = call.query
        rows, count = await run_in_threadpool(
            self.server.store.list_interventions,
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

    async def intervention_counts(self, call: Call) -> BaseModel:
        q: s.InterventionCountsQuery = call.query
        rows, count = await run_in_threadpool(
            self.server.store.intervention_counts,
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


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        f"{API}/kill-switch/kill",
        "kill",
        "Kill a target",
        "kill",
        s.KillSwitchPublic,
        fleet.kill,
        body=s.KillRequest,
        query=s.KillQuery,
        errors=(409,),
        versioned=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        "POST",
        f"{API}/kill-switch/revive",
        "revive",
        "Revive a killed target",
        "kill",
        s.KillSwitchPublic,
        Api.revive,
        body=s.ReviveRequest,
        errors=(404,),
        versioned=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        "GET",
        f"{API}/kill-switch/check",
        "check",
        "Whether a target is killed",
        "check",
        s.CheckResponse,
        Api.check,
        query=s.CheckQuery,
        tags=("kill-switch",),
    ),
    Endpoint(
        "GET",
        f"{API}/kill-switch/state",
        "kill_state",
        "Every active kill switch and the organization's version (for polling guards)",
        "check",
        stream.KillStatePublic,
        stream.state,
        conditional=True,
        tags=("kill-switch",),
    ),
    Endpoint(
        "GET",
        f"{API}/kill-switch/active",
        "list_active",
        "Active kill switches, newest first",
        "check",
        s.KillSwitchesPublic,
        Api.active,
        query=s.PageQuery,
        tags=("kill-switch",),
    ),
    Endpoint(
        "POST",
        f"{API}/keys",
        "create_key",
        "Create an API key (its secret is shown once)",
        "keys",
        s.ApiKeyCreated,
        Api.create_key,
        body=s.ApiKeyCreate,
        tags=("keys",),
    ),
    Endpoint(
        "GET",
        f"{API}/keys",
        "list_keys",
        "API keys, newest first",
        "keys",
        s.ApiKeysPublic,
        Api.list_keys,
        query=s.PageQuery,
        tags=("keys",),
    ),
    Endpoint(
        "DELETE",
        f"{API}/keys/{{key_id}}",
        "revoke_key",
        "Revoke an API key",
        "keys",
        s.ApiKeyPublic,
        Api.revoke_key,
        path_params=s.KeyPath,
        errors=(404, 409),
        tags=("keys",),
    ),
    Endpoint(
        "GET",
        f"{API}/audit",
        "list_audit",
        "Audit log, newest first",
        "read",
        s.AuditEntriesPublic,
        Api.audit,
        query=s.AuditQuery,
        tags=("audit",),
    ),
    Endpoint(
        "POST",
        f"{API}/interventions",
        "report_interventions",
        "Report up to 1,000 interventions (idempotent per id)",
        "report",
        s.InterventionsAccepted,
        Api.report_interventions,
        body=s.InterventionsBatch,
        tags=("interventions",),
    ),
    Endpoint(
        "GET",
        f"{API}/interventions",
        "list_interventions",
        "Interventions, newest first",
        "read",
        s.InterventionsPublic,
        Api.interventions,
        query=s.InterventionQuery,
        tags=("interventions",),
    ),
    Endpoint(
        "GET",
        f"{API}/interventions/counts",
        "intervention_counts",
        "Intervention counts per target and type",
        "read",
        s.InterventionCountsPublic,
        Api.intervention_counts,
        query=s.InterventionCountsQuery,
        tags=("interventions",),
    ),
    # -- fleet: heartbeats, acknowledgements, agents, checkpoints (server/fleet.py) ----------
    Endpoint(
        "POST",
        f"{API}/heartbeats",
        "heartbeat",
        "Report an instance's heartbeat; answers its health and kill state",
        "report",
        fleet.HeartbeatAnswer,
        fleet.heartbeat,
        body=s.HeartbeatIn,
        errors=(409,),
        tags=("fleet",),
    ),
    Endpoint(
        "POST",
        f"{API}/kill-switch/ack",
        "acknowledge",
        "Acknowledge that an instance applied every change up to a version",
        "report",
        s.AckAccepted,
        fleet.ack,
        body=s.AckIn,
        errors=(409,),
        tags=("kill-switch",),
    ),
    Endpoint(
        "GET",
        f"{API}/kill-switch/acks",
        "list_acks",
        "Which live instances have applied a target's active kill, and how fast",
        "read",
        s.AcksPublic,
        fleet.acks,
        query=s.AcksQuery,
        errors=(404,),
        tags=("kill-switch",),
    ),
    Endpoint(
        "GET",
        f"{API}/agents",
        "list_agents",
        "Agents with their instances, health, totals and cost",
        "read",
        s.AgentsPublic,
        fleet.agents,
        query=s.PageQuery,
        tags=("fleet",),
    ),
    Endpoint(
        "GET",
        f"{API}/agents/{{agent_id}}",
        "get_agent",
        "One agent with its instances, health, totals and cost",
        "read",
        s.AgentPublic,
        fleet.agent,
        path_params=s.AgentPath,
        errors=(404,),
        tags=("fleet",),
    ),
    Endpoint(
        "PUT",
        f"{API}/checkpoints/{{key}}",
        "put_checkpoint",
        "Store a JSON checkpoint (at most 256 KiB)",
        "report",
        s.CheckpointPublic,
        fleet.put_checkpoint,
        body=s.CheckpointIn,
        path_params=s.CheckpointPath,
        tags=("fleet",),
    ),
    Endpoint(
        "GET",
        f"{API}/checkpoints/{{key}}",
        "get_checkpoint",
        "The last checkpoint stored under a key",
        "report",
        s.CheckpointPublic,
        fleet.get_checkpoint,
        path_params=s.CheckpointPath,
        errors=(404,),
        tags=("fleet",),
    ),
)


def request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` if it is sensible, else a new one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def build_routes(api: Api, endpoints: Sequence[Endpoint] = ENDPOINTS) -> list[Route]:
    """Starlette routes running each endpoint through auth, validation and error mapping.

    One route per path, so a 405 lists every method of the path in ``Allow``.
    """
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for e in endpoints:
        by_path.setdefault(e.path, {})[e.method] = _endpoint(api, e)
    return [
        Route(path, _dispatch(methods), methods=list(methods)) for path, methods in by_path.items()
    ]


def _dispatch(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return dispatch


def _endpoint(api: Api, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        rid = request_id(request)
        try:
            principal = await require_principal(api, request, endpoint.permission)
            call = Call(request, principal, rid)
            if endpoint.path_params is not None:
                call.path = parse_path(endpoint.path_params, request)
            if endpoint.query is not None:
                call.query = parse_query(endpoint.query, request)
            if endpoint.body is not None:
                call.body = await parse_body(endpoint.body, request)
            result = await endpoint.handler(api, call)
        except Exception as exc:
            error = from_exception(exc, api.server.database.outage)
            if error is None:
                raise
            response = error.response()
        else:
            etag = call.headers.get("ETag")
            if etag is not None and request.headers.get("if-none-match") == etag:
                response = Response(status_code=304, headers=call.headers)
            else:
                response = Response(
                    dump(result), media_type="application/json", headers=call.headers
                )
        response.headers["x-request-id"] = rid
        return response

    return run


async def require_principal(api: Api, request: Request, permission: str) -> Principal:
    """The request's credential if it grants ``permission``; else a 401 or 403 ``ApiError``."""
    api.server.feed.refresh()  # another process may have revoked a key or killed a target
    try:
        principal = await authenticate(request, api.server.auth_backends)
    except AuthenticationError as exc:
        raise _unauthorized(str(exc) or "invalid credentials") from None
    if principal is None:
        raise _unauthorized(
            "missing credentials: send Authorization: Bearer <API key> or a session"
        )
    if not principal.allows(permission):
        scope = required_scope(permission)
        also = "" if scope == "admin" else " (or admin)"
        raise ApiError(
            "forbidden",
            f"this request needs the {scope!r} scope{also}; the credential has "
            f"{', '.join(sorted(principal.scopes)) or 'no scopes'}",
            required_scope=scope,
        )
    return principal


def _unauthorized(detail: str) -> ApiError:
    return ApiError("unauthorized", detail, headers={"www-authenticate": "Bearer"})
