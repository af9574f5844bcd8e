"""The ASGI gateway in Starlette and FastAPI hosts, served by a real uvicorn on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI, Header
from integration_contract import Body, IntegrationContract
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import agentguard
from agentguard import Scope
from agentguard.integrations.asgi import KillSwitchMiddleware

if TYPE_CHECKING:
    from conftest import HardBlock, LiveServer, MakeGuard, Spans

BOT = {"X-Agent-Id": "support-bot", "X-Run-Id": "run-1", "X-Mission-Id": "q4"}
BOT_IDS = ("agent_id", "run_id", "mission_id")


def starlette_host(guard: agentguard.Guard, lifespan_ran: list[str]) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(agentguard.current_scope()._asdict())

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lifespan_ran.append("startup")
        yield

    return Starlette(
        routes=[Route("/tools/whoami", whoami), WebSocketRoute("/ws", echo)],
        middleware=[Middleware(KillSwitchMiddleware, guard=guard)],
        lifespan=lifespan,
    )


def test_starlette_host_http_websocket_and_lifespan(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, live_server: LiveServer
) -> None:
    guard = make_guard()
    lifespan_ran: list[str] = []
    host = live_server(starlette_host(guard, lifespan_ran))
    assert lifespan_ran == ["startup"]  # lifespan passed straight through

    with httpx.Client(base_url=f"http://{host}", timeout=10) as http:
        allowed = http.get("/tools/whoami", headers=BOT)
        assert allowed.status_code == 200
        assert allowed.json() == dict(zip(BOT_IDS, BOT.values(), strict=True))  # scope follows
        with connect(f"ws://{host}/ws", additional_headers=BOT, open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"

        guard.kill("agent", "support-bot", reason="Drained $3k in 4 minutes", actor="usr_abc")
        refused = http.get("/tools/whoami", headers=BOT)
        assert refused.status_code == 403
        body = refused.json()
        assert body["error"] == "policy_violation"
        assert (body["target_type"], body["target_id"]) == ("agent", "support-bot")
        assert (body["reason"], body["killed_by"]) == ("Drained $3k in 4 minutes", "usr_abc")
        assert body["killed_at"].endswith("Z") and body["intervention_id"] == hard_block(guard).id
        span = spans.one_block("agentguard.gateway GET /tools/whoami", "gateway")
        assert span.attributes["agentguard.agent.id"] == "support-bot"

        assert http.get("/tools/whoami", headers={"X-Agent-Id": "other-bot"}).status_code == 200
        assert http.get("/tools/whoami").json() == dict.fromkeys(BOT_IDS)
        bad = http.get("/tools/whoami", headers={"X-Run-Id": "r" * 300})
        assert bad.status_code == 400 and bad.json()["field"] == "X-Run-Id"
        # Ids are visible text: a soft hyphen (U+00AD, latin-1 0xAD) hides inside one.
        hidden = http.get("/tools/whoami", headers={"X-Agent-Id": b"support\xad-bot"})
        assert hidden.status_code == 400 and hidden.json()["field"] == "X-Agent-Id"
        assert "invisible" in hidden.json()["message"]

        with connect(f"ws://{host}/ws", additional_headers=BOT, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "support-bot" in closed.value.rcvd.reason
        assert len(guard.interventions()) == 2

        guard.revive("agent", "support-bot")
        assert http.get("/tools/whoami", headers=BOT).status_code == 200


class ServerSpans:
    """A stand-in for an OpenTelemetry ASGI instrumentation: one SERVER span per request."""

    def __init__(self, app: Any, tracer: Any) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER):
            await self.app(scope, receive, send)


def test_fastapi_host_with_custom_identity_inside_the_hosts_trace(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, live_server: LiveServer
) -> None:
    guard = make_guard()
    keys = {
        "key-a": Scope(agent_id="agent-a", mission_id="launch"),
        "key-b": Scope(agent_id="agent-b"),
    }
    app = FastAPI()

    @app.post("/v1/tools/{name}")
    async def call_tool(name: str, x_api_key: str = Header()) -> dict[str, Any]:
        return {"tool": name, "mission": agentguard.current_scope().mission_id}

    app.add_middleware(
        KillSwitchMiddleware,
        guard=guard,
        identify=lambda scope: keys.get(dict(scope["headers"]).get(b"x-api-key", b"").decode()),
    )
    app.add_middleware(ServerSpans, tracer=spans.tracer)  # added last: outermost
    host = live_server(app)

    with httpx.Client(base_url=f"http://{host}", timeout=10) as http:
        ok = http.post("/v1/tools/search", headers={"X-Api-Key": "key-a"})
        assert ok.status_code == 200 and ok.json() == {"tool": "search", "mission": "launch"}

        guard.kill("mission", "launch", reason="launch aborted")
        refused = http.post("/v1/tools/search", headers={"X-Api-Key": "key-a"})
        assert refused.status_code == 403 and refused.json()["reason"] == "launch aborted"
        assert http.post("/v1/tools/search", headers={"X-Api-Key": "key-b"}).status_code == 200
        assert http.get("/openapi.json").status_code == 200  # unidentified traffic passes

    block = hard_block(guard)
    assert (block.target_type, block.agent_id, block.mission_id) == ("mission", "agent-a", "launch")
    span = spans.one_block("agentguard.gateway POST /v1/tools/search", "gateway")
    (server_span,) = [
        s
        for s in spans.exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER and s.context.span_id == span.parent.span_id
    ]
    assert server_span.name == "POST /v1/tools/search"


def test_killing_the_gateway_action_closes_it_to_everyone(
    make_guard: MakeGuard, live_server: LiveServer
) -> None:
    guard = make_guard()
    host = live_server(starlette_host(guard, []))
    guard.kill("tool", "gateway", reason="maintenance")
    with httpx.Client(base_url=f"http://{host}", timeout=10) as http:
        response = http.get("/tools/whoami")
    assert response.status_code == 403 and response.json()["target_type"] == "tool"


class TestContract(IntegrationContract):
    """The gateway keeps the integration contract; ids are the caller's headers."""

    action = "gateway"
    sync_path = False
    on_block = ("message",)  # a 403 naming the kill
    fixed_ids = False
    found_agent = "caller"
    found_wins = True  # the request's claim wins over the host's agentguard.scope

    def make(self, guard: agentguard.Guard, body: Body, *, on_block: str | None) -> Any:
        async def tool(request: Request) -> PlainTextResponse:
            return PlainTextResponse(body())

        return KillSwitchMiddleware(Starlette(routes=[Route("/tool", tool)]), guard=guard)

    async def call(self, made: Any, *, sync: bool) -> Any:
        transport = httpx.ASGITransport(app=made)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.get("/tool", headers={"X-Agent-Id": "caller"})

    def undo(self, made: Any) -> Any:
        return made.app

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, httpx.Response) and outcome.status_code == 403:
            return str(outcome.json()["message"])
        return super().refusal(outcome)
