"""Outbound HTTP: guarded httpx transports around a real local server or a MockTransport."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from integration_contract import Body, IntegrationContract
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.httpx import AsyncGuardedTransport, GuardedTransport

if TYPE_CHECKING:
    from conftest import HardBlock, LiveServer, MakeGuard, Spans


def test_sync_transport_refuses_before_any_bytes_leave(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, live_server: LiveServer
) -> None:
    seen: list[str] = []

    async def charge(request: Request) -> PlainTextResponse:
        seen.append(request.headers.get("x-order", ""))
        return PlainTextResponse("charged")

    host = live_server(Starlette(routes=[Route("/charge", charge, methods=["POST"])]))
    guard = make_guard()
    transport = GuardedTransport(guard=guard)  # around httpx's own HTTP transport
    client = httpx.Client(transport=transport, base_url=f"http://{host}", timeout=10)

    with client, scope(agent_id="billing-bot", run_id="run-3"):
        assert client.post("/charge", headers={"X-Order": "1"}).text == "charged"
        guard.kill("agent", "billing-bot", reason="double charging", actor="usr_ops")
        with spans.tracer.start_as_current_span("invoke_agent billing-bot") as agent_span:
            with pytest.raises(PolicyViolationError, match="double charging"):
                client.post("/charge", headers={"X-Order": "2"})
        guard.revive("agent", "billing-bot")
        assert client.post("/charge", headers={"X-Order": "3"}).status_code == 200

    assert seen == ["1", "3"]  # the refused request never reached the server
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("http_request", "billing-bot", "run-3")
    span = spans.one_block("execute_tool http_request", "http_request")
    assert span.parent.span_id == agent_span.get_span_context().span_id


async def test_async_transport_follows_the_scope_into_tasks(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200, text="ok")

    guard = make_guard()
    transport = AsyncGuardedTransport(httpx.MockTransport(handler), guard=guard)
    async with httpx.AsyncClient(transport=transport) as client:

        async def agent(name: str) -> int:
            with scope(agent_id=name):
                try:
                    return (await client.get(f"https://api.example.com/{name}")).status_code
                except PolicyViolationError:
                    return 403

        guard.kill("agent", "rogue")
        assert await asyncio.gather(agent("good"), agent("rogue")) == [200, 403]
    assert sent == ["https://api.example.com/good"]
    assert hard_block(guard).agent_id == "rogue"


def test_killing_the_http_action_cuts_every_client_off_and_failures_count(
    make_guard: MakeGuard,
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    guard = make_guard()
    client = httpx.Client(transport=GuardedTransport(httpx.MockTransport(broken), guard=guard))
    with client:
        with pytest.raises(httpx.ConnectError):
            client.get("https://api.example.com/")
        guard.kill("tool", "http_request", reason="egress frozen")
        with pytest.raises(PolicyViolationError, match="egress frozen"):
            client.get("https://api.example.com/")
    counts = guard.counts(action="http_request")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 1)


def test_transport_is_a_plain_wrapper(make_guard: MakeGuard) -> None:
    inner = httpx.MockTransport(lambda request: httpx.Response(204))
    transport = GuardedTransport(inner, guard=make_guard(), action="egress")
    assert isinstance(transport, httpx.BaseTransport) and transport.inner is inner
    assert isinstance(AsyncGuardedTransport(guard=make_guard()).inner, httpx.AsyncHTTPTransport)
    with httpx.Client(transport=transport) as client:
        assert client.get("https://example.com/").status_code == 204


class TestContract(IntegrationContract):
    """The sync and async transports keep the integration contract."""

    action = "http_request"
    on_block = ("raise",)
    fixed_ids = False

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        inner = httpx.MockTransport(lambda request: httpx.Response(200, text=body()))
        return GuardedTransport(inner, guard=guard), AsyncGuardedTransport(inner, guard=guard)

    async def call(self, made: Any, *, sync: bool) -> Any:
        transport, async_transport = made
        if sync:
            with httpx.Client(transport=transport) as client:
                return client.get("https://api.example.com/").text
        async with httpx.AsyncClient(transport=async_transport) as aclient:
            return (await aclient.get("https://api.example.com/")).text

    def undo(self, made: Any) -> Any:
        return made[0].inner, made[1].inner
