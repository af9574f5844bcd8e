"""``KillSwitchServer``: the store, the change feed and the mountable Starlette app together."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from opentelemetry import metrics, trace
from starlette.applications import Starlette
from starlette.authentication import AuthenticationBackend
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import InvalidInputError
from ..index import KillIndex
from ..records import utcnow
from ..rules import Rule
from ..telemetry import Telemetry
from .api.audit import AuditHandlers
from .api.authenticator import Authenticator
from .api.checkpoints import CheckpointHandlers
from .api.drills import DrillHandlers
from .api.endpoints import ENDPOINTS
from .api.fleet import FleetHandlers
from .api.interventions import InterventionHandlers
from .api.keys import KeyHandlers
from .api.kills import KillHandlers
from .api.metrics import METRICS_PATH, MetricsEndpoint
from .api.openapi import OPENAPI_PATH, OpenApiEndpoint
from .api.revives import ReviveRequestHandlers
from .api.routes import SlashRedirect, build_routes
from .api.runs import RunHandlers
from .api.sentinel import SentinelHandlers
from .api.series import SeriesHandlers
from .api.snapshots import SnapshotCache
from .api.state import KillStateReader, encode_state
from .api.stream import STREAM_PATH, StreamEndpoint, encode_change, encode_drill
from .api.webhooks import WebhookHandlers
from .approvals import ReviveApprovals
from .auth.clerk import ClerkAuth
from .auth.keys import KeyStore
from .auth.principal import ApiKeyAuth
from .auth.session import ConsoleSessions, SessionAuth
from .console import Console
from .drills import Drills, DrillSchedule
from .expiry import DEFAULT_EXPIRY_INTERVAL, KillExpiry
from .fastcheck import FastCheck
from .fleet import Fleet
from .hub import DEFAULT_MAX_STREAMS_PER_KEY, DEFAULT_MAX_STREAMS_PER_ORG, StreamHub
from .metrics import Metrics, server_metrics
from .problems import http_exception
from .rules import ServerRules
from .source import ServerSource
from .store.database import Database
from .store.feed import ChangeFeed
from .store.sqlstore import SQLStore
from .webhooks.sender import WebhookSender, WebhookSettings


class KillSwitchServer:
    """The kill-switch API on SQLite or PostgreSQL, as an ASGI app to mount or serve.

    ``KillSwitchServer()`` keeps everything in an in-memory SQLite database;
    ``KillSwitchServer("sqlite:///agentguard.db")`` or a ``postgresql://`` URL persist it.
    ``auth`` adds session backends (:class:`~agentguard.server.auth.clerk.ClerkAuth`,
    :class:`~agentguard.server.auth.principal.HostUserAuth`, or any Starlette
    ``AuthenticationBackend`` that yields a ``Principal``) after API keys; the console's
    session cookie comes last. ``session_secret`` signs console sessions (see
    :mod:`agentguard.server.auth.session`). ``require_reason=True`` refuses kills without a reason.
    ``max_streams_per_key`` and ``max_streams_per_organization`` cap the open change streams of
    one credential and of one organization in this process (one more is answered 429 with
    ``Retry-After``). ``webhooks`` says how webhooks are sent (:class:`WebhookSettings`:
    private addresses, timeouts, retries); every started server runs a sender unless
    ``WebhookSettings(send=False)``. Every started server revives expired time-limited kills
    every ``expiry_interval`` seconds (once across replicas). ``drill_every`` (seconds) drills
    every agent with live instances once per interval, once across replicas, each drill
    waiting ``drill_timeout``. An organization-wide stop (target type ``organization``) needs
    the ``admin`` scope, or ``operator`` too with ``operators_can_stop_all=True``.
    ``revive_approvals`` (:class:`ReviveApprovals`, or its rules as specs such as ``"2"`` or
    ``["agent:payments*=2"]``) makes the revives they match requests that other people must
    approve over the API; in-process revives (``Guard(server).revive``) are not governed.

    Mounted in a host (``host.mount("/guard", server.app)``) the API is at
    ``/guard/api/v1/...``. Its lifespan never runs there, so the server initialises on the
    first request; hosts may also compose :meth:`lifespan` into their own.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        auth: AuthenticationBackend | Sequence[AuthenticationBackend] | None = None,
        session_secret: str | bytes | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        pool_size: int = 10,
        poll_interval: float = 0.05,
        keepalive: float = 5.0,
        max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY,
        max_streams_per_organization: int = DEFAULT_MAX_STREAMS_PER_ORG,
        rules: Sequence[Rule] | None = None,
        clock: Callable[[], datetime] = utcnow,
        require_reason: bool = False,
        webhooks: WebhookSettings | None = None,
        expiry_interval: float = DEFAULT_EXPIRY_INTERVAL,
        drill_every: float | None = None,
        drill_timeout: float = 5.0,
        operators_can_stop_all: bool = False,
        revive_approvals: ReviveApprovals | str | Sequence[str] | None = None,
    ) -> None:
        # Refuse kills, revives and revive approvals without a reason (422 naming it).
        self.require_reason = require_reason
        # An organization-wide stop needs admin, or also operator if this is set.
        self.operators_can_stop_all = operators_can_stop_all
        if not isinstance(revive_approvals, ReviveApprovals):
            revive_approvals = ReviveApprovals.parse(revive_approvals or ())
        self.revive_approvals = revive_approvals
        self.database = Database(database_url, pool_size=pool_size)
        store = self._store = SQLStore(self.database)
        feed = store.feed
        self.keys = KeyStore(self.database, feed)
        extra = [auth] if isinstance(auth, AuthenticationBackend) else list(auth or ())
        self.sessions = ConsoleSessions(self.keys, self.database, session_secret)
        self.auth_backends: list[AuthenticationBackend] = [
            ApiKeyAuth(self.keys),
            *extra,
            SessionAuth(self.sessions),
        ]
        self.telemetry = Telemetry(tracer_provider, meter_provider)
        # Heartbeats, health, acknowledgements and server rules; ``clock`` is its wall time.
        server_rules = None
        if rules:
            server_rules = ServerRules(
                rules, store=store, index=feed.index, telemetry=self.telemetry
            )
        self.fleet = Fleet(store, feed.index, self.telemetry, clock=clock, rules=server_rules)
        # GET /metrics; ``metrics.add(source)`` shows more.
        self.metrics: Metrics = server_metrics(
            store, self.fleet, self.database.outage, server_rules.rules if server_rules else ()
        )
        self._poll_interval = poll_interval
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False
        self.keepalive = keepalive
        # Open change streams admitted per credential and per organization, in this process.
        self.max_streams_per_key = _positive_int("max_streams_per_key", max_streams_per_key)
        self.max_streams_per_org = _positive_int(
            "max_streams_per_organization", max_streams_per_organization
        )
        outage = self.database.outage
        self.stream_hub = StreamHub(
            feed=feed,
            keys=self.keys,
            sessions=self.sessions,
            fleet=self.fleet,
            outage=outage,
            encode=encode_change,
            keepalive=keepalive,
            counts=store,
            drills=store,
            encode_drill=encode_drill,
            max_streams_per_key=self.max_streams_per_key,
            max_streams_per_org=self.max_streams_per_org,
        )
        self.webhook_settings = webhooks or WebhookSettings()
        # Sends the outbox's webhook deliveries; counts() for metrics.
        self.webhook_sender = WebhookSender(store, self.webhook_settings, outage)
        # Revives time-limited kills when they expire.
        self.expiry = KillExpiry(store, self.telemetry, expiry_interval)
        # Drills: started through the API, or on a schedule (``drill_every`` seconds).
        self.drills = Drills(store, self.fleet, self.stream_hub.publish_drill)
        self.drill_schedule: DrillSchedule | None = None
        if drill_every is not None:
            if drill_every <= 0 or drill_timeout <= 0 or drill_timeout > 60:
                raise InvalidInputError(
                    "drill_every",
                    "drills need a positive interval and a timeout of at most 60 seconds",
                )
            self.drill_schedule = DrillSchedule(self.drills, drill_every, timeout=drill_timeout)
        self.starlette = self._starlette(store)
        self.app = FastCheck(self.starlette, server=self, feed=feed, keys=self.keys, outage=outage)

    def _starlette(self, store: SQLStore) -> Starlette:
        """The app: every endpoint's handlers, the stream, the OpenAPI document, the console."""
        feed, outage = store.feed, self.database.outage
        authenticator = Authenticator(self.auth_backends, feed)
        # Full snapshots, built once per version for every guard that needs one.
        self.snapshots = SnapshotCache(store, feed.index, outage, encode_state)
        state = KillStateReader(store, feed.index, outage, self.snapshots)
        handlers = [
            KillHandlers(
                store,
                feed.index,
                self.telemetry,
                self.fleet,
                require_reason=self.require_reason,
                operators_can_stop_all=self.operators_can_stop_all,
                approvals=self.revive_approvals,
            ),
            ReviveRequestHandlers(store, self.telemetry, require_reason=self.require_reason),
            state,
            KeyHandlers(self.keys),
            AuditHandlers(store),
            InterventionHandlers(store),
            FleetHandlers(self.fleet, store),
            RunHandlers(self.fleet),
            SeriesHandlers(store, self.fleet.clock),
            CheckpointHandlers(store),
            SentinelHandlers(store, self.fleet),
            WebhookHandlers(store, self.webhook_settings),
            DrillHandlers(self.drills, store),
        ]
        stream = StreamEndpoint(
            hub=self.stream_hub,
            auth=authenticator,
            snapshots=self.snapshots,
            store=store,
            keys=self.keys,
            sessions=self.sessions,
            database=self.database,
            index=feed.index,
        )
        clerk = any(isinstance(b, ClerkAuth) for b in self.auth_backends)
        console = Console(
            auth=authenticator,
            keys=self.keys,
            sessions=self.sessions,
            feed=feed,
            outage=outage,
            operators_can_stop_all=self.operators_can_stop_all,
        )
        routes = build_routes(ENDPOINTS, handlers, auth=authenticator, outage=outage)
        routes.append(Route(STREAM_PATH, stream.serve, methods=["GET"], name="stream"))
        routes.append(
            Route(OPENAPI_PATH, OpenApiEndpoint(clerk=clerk).serve, methods=["GET"], name="openapi")
        )
        metrics = MetricsEndpoint(auth=authenticator, metrics=self.metrics, outage=outage)
        routes.append(Route(METRICS_PATH, metrics.serve, methods=["GET"], name="metrics"))
        routes.extend(console.routes())  # the page at kill-switch, and its session
        starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_exception},
            lifespan=self.lifespan,
        )
        # Starlette's own trailing-slash redirect writes the Host header into Location.
        starlette.router.redirect_slashes = False
        starlette.router.default = SlashRedirect(starlette.router)
        return starlette

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Apply migrations and start following other processes' writes (idempotent)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("this KillSwitchServer is closed")
            self.database.upgrade()
            self._store.warm_up()
            self._store.feed.start(poll_interval=self._poll_interval)
            self.webhook_sender.start()
            self.expiry.start()
            if self.drill_schedule is not None:
                self.drill_schedule.start()
            self._started = True

    @property
    def started(self) -> bool:
        """Whether ``start`` has run (and ``close`` has not since)."""
        return self._started

    async def ready(self) -> None:
        """Start in a worker thread unless already started."""
        if not self._started:
            await run_in_threadpool(self.start)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start with the host app and close with it: ``Starlette(lifespan=server.lifespan)``."""
        await self.ready()
        try:
            yield
        finally:
            await run_in_threadpool(self.close)

    def close(self) -> None:
        """Stop the change feed and close database connections."""
        with self._start_lock:
            self._closed = True
            self._started = False
            self.webhook_sender.stop()
            self.expiry.stop()
            if self.drill_schedule is not None:
                self.drill_schedule.stop()
            self._store.feed.stop()
            self.stream_hub.stop()
            self.database.dispose()

    # -- in-process access --------------------------------------------------------------------

    @property
    def store(self) -> SQLStore:
        """The :class:`~agentguard.store.KillStore` behind the API."""
        self.start()
        return self._store

    @property
    def feed(self) -> ChangeFeed:
        """The change feed: per-organization indexes and change listeners."""
        return self._store.feed

    def index(self, organization_id: str) -> KillIndex:
        """The organization's kill index, as ``/check`` reads it."""
        return self._store.feed.index(organization_id)

    def kill_state_source(self, organization_id: str) -> ServerSource:
        """The source of ``Guard(server)``: reads this server's index in-process."""
        self.start()
        return ServerSource(
            self._store, organization_id, fleet=self.fleet, reason_required=self.require_reason
        )

    def create_key(
        self,
        organization_id: str,
        *,
        owner: str,
        scopes: Sequence[str],
        name: str | None = None,
        agents: Sequence[str] | None = None,
        actor: str = "local",
    ) -> str:
        """Create an API key and return its secret token.

        An ``agent`` key writes only for the ``agents`` it names: exact ids, ``prefix-*``,
        or ``["*"]`` for any agent.
        """
        self.start()
        _, token = self.keys.create(
            organization_id, owner=owner, scopes=scopes, name=name, agents=agents, actor=actor
        )
        return token

    # -- the app ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"<KillSwitchServer {self.database.url.render_as_string(hide_password=True)}>"


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(name, f"must be a whole number of at least 1; got {value!r}")
    return value
