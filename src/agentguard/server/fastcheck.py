"""The server's ASGI entry point: lazy start, and a lean path for ``GET /check``.

``/check`` is what every strict-mode agent calls before every tool call. When the request is
the plain case (an API key this process has already verified, a valid target in the query)
it is answered here straight from the index, without Starlette's routing and request
objects; anything else (a new key, a session, bad input) goes to the full app, which answers
the same question with the same JSON and produces every error.
"""

from __future__ import annotations

import json
import os
from typing import Protocol
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol import API
from ..records import KillSwitch
from ..targets import MAX_TARGET_ID_LENGTH, TARGET_TYPES
from .auth.keys import KeyStore
from .auth.principal import PERMISSIONS
from .problems import database_unavailable
from .store.database import Outage, is_unavailable
from .store.feed import ChangeFeed

CHECK_PATH = f"{API}/kill-switch/check"
_CHECK_SCOPES = frozenset(("admin", *PERMISSIONS["check"]))
_BEARER = b"bearer ag_"


class Startable(Protocol):
    """What starts on the first request (the server: migrations, the change feed)."""

    @property
    def started(self) -> bool: ...

    async def ready(self) -> None: ...


class FastCheck:
    """Pure ASGI: start the server on first use; answer plain ``/check`` calls directly."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        server: Startable,
        feed: ChangeFeed,
        keys: KeyStore,
        outage: Outage,
    ) -> None:
        self.app = app
        self.server = server
        self.feed = feed
        self.keys = keys
        self.outage = outage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                if not self.server.started:
                    await self.server.ready()
                if scope["method"] == "GET" and _route_path(scope) == CHECK_PATH:
                    if await self._check(scope, send):
                        return
            except Exception as exc:  # before anything was sent: a 503 if the database is away
                if not is_unavailable(exc):
                    raise
                self.outage.began(exc)
                await database_unavailable(exc).response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope, send: Send) -> bool:
        token = request_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:10].lower() != _BEARER:
                    return False
                token = value[7:].strip().decode("latin-1")
            elif name == b"x-request-id":
                return False  # let the full app validate and echo it
        if token is None:
            return False
        feed = self.feed
        feed.refresh()  # first: another process may have revoked the key or killed the target
        key = self.keys.cached(token)
        if key is None or key.scopes.isdisjoint(_CHECK_SCOPES):
            return False
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        target_type = query.get("target_type")
        target_id = query.get("target_id")
        if target_type not in TARGET_TYPES or target_type == "selector" or not _plain_id(target_id):
            return False  # a selector is normalised (and checked) by the full app
        assert target_id is not None
        ks = feed.index(key.organization_id).get(target_type, target_id)
        request_id = os.urandom(16).hex()
        body = _answer(target_type, target_id, ks)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True


def _plain_id(target_id: str | None) -> bool:
    """Printable ASCII (no control characters); other ids get the full app's validation."""
    return (
        target_id is not None
        and 0 < len(target_id) <= MAX_TARGET_ID_LENGTH
        and target_id.isascii()
        and target_id.isprintable()
        and not target_id.isspace()
    )


def _answer(target_type: str, target_id: str, ks: KillSwitch | None) -> bytes:
    """The same JSON as ``CheckResponse.model_dump_json()``."""
    if ks is None:
        data = {
            "is_killed": False,
            "target_type": target_type,
            "target_id": target_id,
            "reason": None,
            "killed_at": None,
        }
    else:
        data = {
            "is_killed": True,
            "target_type": target_type,
            "target_id": target_id,
            "reason": ks.reason,
            "killed_at": ks.killed_at.isoformat().replace("+00:00", "Z"),
        }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _route_path(scope: Scope) -> str:
    """The request's path below the mount point (``root_path``), as Starlette's router sees it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
