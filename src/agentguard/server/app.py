"""``KillSwitchServer``: the store, the change feed and the mountable Starlette app together."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry import metrics, trace
from starlette.applications import Starlette
from starlette.authentication import AuthenticationBackend
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..index import KillIndex
from ..telemetry import Telemetry
from .auth import ApiKeyAuth
from .clerk import ClerkAuth
from .database import Database
from .fastcheck import FastCheck
from .feed import ChangeFeed
from .keys import KeyStore
from .openapi import OPENAPI_PATH, build_openapi
from .problems import http_exception
from .routes import Api, build_routes
from .source import ServerSource
from .sqlstore import SQLStore


class KillSwitchServer:
    """The kill-switch API on SQLite or PostgreSQL, as an ASGI app to mount or serve.

    ``KillSwitchServer()`` keeps everything in an in-memory SQLite database;
    ``KillSwitchServer("sqlite:///agentguard.db")`` or a ``postgresql://`` URL persist it.
    ``auth`` adds session backends (:class:`~agentguard.server.clerk.ClerkAuth`,
    :class:`~agentguard.server.auth.HostUserAuth`, or any Starlette
    ``AuthenticationBackend`` that yields a ``Principal``) after API keys.

    Mounted in a host (``host.mount("/guard", server.app)``) the API is at
    ``/guard/api/v1/...``. Its lifespan never runs there, so the server initialises on the
    first request; hosts may also compose :meth:`lifespan` into their own.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        auth: AuthenticationBackend | Sequence[AuthenticationBackend] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        pool_size: int = 10,
        poll_interval: float = 0.05,
    ) -> None:
        self.database = Database(database_url, pool_size=pool_size)
        self._store = SQLStore(self.database)
        self.keys = KeyStore(self._store)
        extra = [auth] if isinstance(auth, AuthenticationBackend) else list(auth or ())
        self.auth_backends: list[AuthenticationBackend] = [ApiKeyAuth(self.keys), *extra]
        self.telemetry = Telemetry(tracer_provider, meter_provider)
        self._poll_interval = poll_interval
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False
        routes = build_routes(Api(self))
        routes.append(Route(OPENAPI_PATH, self._openapi, methods=["GET"], name="openapi"))
        self.starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_exception},
            lifespan=self.lifespan,
        )
        self.app = FastCheck(self, self.starlette)
        self._openapi_documents: dict[str, dict[str, Any]] = {}

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
            self._store.feed.start(poll_interval=self._poll_interval)
            self._started = True

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
            self._store.feed.stop()
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
        return ServerSource(self._store, organization_id)

    def create_key(
        self,
        organization_id: str,
        *,
        owner: str,
        scopes: Sequence[str],
        name: str | None = None,
        actor: str = "local",
    ) -> str:
        """Create an API key and return its secret token."""
        self.start()
        _, token = self.keys.create(
            organization_id, owner=owner, scopes=scopes, name=name, actor=actor
        )
        return token

    # -- the app ------------------------------------------------------------------------------

    async def _openapi(self, request: Request) -> JSONResponse:
        server_url = request.scope.get("root_path", "") or "/"
        document = self._openapi_documents.get(server_url)
        if document is None:
            clerk = any(isinstance(b, ClerkAuth) for b in self.auth_backends)
            document = build_openapi(server_url=server_url, clerk=clerk)
            self._openapi_documents[server_url] = document
        return JSONResponse(document)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"<KillSwitchServer {self.database.url.render_as_string(hide_password=True)}>"
