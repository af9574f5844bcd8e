"""Mounting the server under a prefix of a Starlette or FastAPI host that has routes of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from agentguard.server import KillSwitchServer
from support.api import bearer

CHECK = {"target_type": "agent", "target_id": "rogue-bot"}


def exercise(client: Any, token: str, prefix: str) -> None:
    """Kill, check (full and fast path), list and revive through the mounted API."""
    h = bearer(token)
    killed = client.post(
        f"{prefix}/api/v1/kill-switch/kill", json={**CHECK, "reason": "r"}, headers=h
    )
    assert killed.status_code == 200, killed.text
    for _ in range(2):  # the first verifies the key, the second takes the fast path
        check = client.get(f"{prefix}/api/v1/kill-switch/check", params=CHECK, headers=h)
        assert check.json()["is_killed"] is True
    assert client.get(f"{prefix}/api/v1/kill-switch/active", headers=h).json()["count"] == 1
    assert (
        client.post(f"{prefix}/api/v1/kill-switch/revive", json=CHECK, headers=h).status_code == 200
    )
    document = client.get(f"{prefix}/api/v1/openapi.json").json()
    assert document["servers"] == [{"url": prefix or "/"}]
    if prefix:  # outside the prefix the API does not exist
        assert client.get("/api/v1/kill-switch/check", params=CHECK, headers=h).status_code == 404


def test_starlette_host_without_lifespan(make_server: Any, database_url: str) -> None:
    server: KillSwitchServer = make_server(database_url)

    async def home(request: Any) -> JSONResponse:
        return JSONResponse({"host": "starlette"})

    host = Starlette(routes=[Route("/", home), Mount("/guard", server.app)])
    # Nothing has run yet: the first request initialises the server (migrations, feed).
    assert server.database.revision() is None
    with TestClient(host) as client:
        assert client.get("/").json() == {"host": "starlette"}
        assert client.get("/guard/api/v1/openapi.json").status_code == 200
        assert server.database.revision() is not None
        token = server.create_key("org_a", owner="usr_abc", scopes=["admin"])
        exercise(client, token, "/guard")
        assert client.get("/").json() == {"host": "starlette"}


def test_fastapi_host(make_server: Any, database_url: str) -> None:
    server: KillSwitchServer = make_server(database_url)
    host = FastAPI()

    @host.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    host.mount("/ops/guard", server.app)
    with TestClient(host) as client:
        assert client.get("/health").json() == {"status": "ok"}
        token = server.create_key("org_a", owner="usr_abc", scopes=["admin"])
        exercise(client, token, "/ops/guard")
        assert client.get("/docs").status_code == 200  # the host's own routes are untouched


async def test_host_composes_the_lifespan(make_server: Any, database_url: str) -> None:
    server: KillSwitchServer = make_server(database_url)
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with server.lifespan(app):
            events.append(f"started={server.started}")
            yield
        events.append(f"closed={not server.started}")

    host = FastAPI(lifespan=lifespan)
    host.mount("/guard", server.app)
    with TestClient(host) as client:
        token = server.create_key("org_a", owner="usr_abc", scopes=["operator"])
        response = client.post("/guard/api/v1/kill-switch/kill", json=CHECK, headers=bearer(token))
        assert response.status_code == 200
    assert events == ["started=True", "closed=True"]


async def test_httpx_asgi_transport(make_server: Any, database_url: str) -> None:
    server: KillSwitchServer = make_server(database_url)
    host = Starlette(routes=[Mount("/g", server.app)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://t") as c:
        # The first request starts the server; a key made afterwards is then usable.
        assert (await c.get("/g/api/v1/openapi.json")).status_code == 200
        token = server.create_key("org_a", owner="usr_abc", scopes=["operator"])
        response = await c.post("/g/api/v1/kill-switch/kill", json=CHECK, headers=bearer(token))
        assert response.status_code == 200
        check = await c.get("/g/api/v1/kill-switch/check", params=CHECK, headers=bearer(token))
        assert check.json()["is_killed"] is True


def test_in_memory_server_is_shared_across_threads(make_server: Any) -> None:
    server: KillSwitchServer = make_server()  # no URL: in-memory SQLite
    token = server.create_key("org_a", owner="usr_abc", scopes=["admin"])
    with TestClient(server.app) as client:
        exercise(client, token, "")
        # Written in the threadpool, read back on this thread through the same database.
        assert server.store.list_audit("org_a")[1] == 3
