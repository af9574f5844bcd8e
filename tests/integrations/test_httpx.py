"""Outbound HTTP: guarded httpx transports around a real local server or a MockTransport."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from integration_contract import Body, IntegrationContract
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from agentguard import Guard, Intervention, InterventionType, PolicyViolationError, scope
from agentguard.integrations.httpx import AsyncGuardedTransport, GuardedTransport
from support import eventually

if TYPE_CHECKING:
    from conftest import HardBlock, LiveServer, MakeGuard, Spans


def one_cancellation(guard: Guard) -> Intervention:
    recorded = guard.interventions()
    assert [iv.type for iv in recorded] == [InterventionType.CANCELLED], recorded
    return recorded[0]


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


# -- a kill while a request is in flight --------------------------------------------------------


def streaming_app(sent: list[int]) -> Starlette:
    """``/tokens`` streams 200 tokens, one every 20 ms; ``/slow`` answers after 30 s (both note
    in ``sent`` what they began)."""

    async def tokens(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(200):
                sent.append(i)
                yield f"token{i} ".encode()
                await asyncio.sleep(0.02)

        return StreamingResponse(body(), media_type="text/plain")

    async def slow(request: Request) -> PlainTextResponse:
        sent.append(-1)
        for _ in range(600):  # 30 s, unless the client goes away
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
        return PlainTextResponse("late")

    return Starlette(routes=[Route("/tokens", tokens), Route("/slow", slow)])


def kill_when(guard: Guard, ready: Callable[[], bool]) -> None:
    """Kill the agent from another thread (as a remote guard's feed applies a kill) once
    ``ready()``."""

    def kill() -> None:
        eventually(ready, 10, 0.005)
        guard.kill("agent", "stream-bot", reason="bad answers", actor="usr_ops")

    threading.Thread(target=kill, daemon=True).start()


def read_stream(client: httpx.Client, got: list[bytes]) -> None:
    with client.stream("GET", "/tokens") as response:
        for chunk in response.iter_raw():
            got.append(chunk)


async def aread_stream(client: httpx.AsyncClient, got: list[bytes]) -> None:
    async with client.stream("GET", "/tokens") as response:
        async for chunk in response.aiter_raw():
            got.append(chunk)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_kill_ends_a_streaming_response_midway(
    make_guard: MakeGuard, spans: Spans, live_server: LiveServer, sync: bool
) -> None:
    sent: list[int] = []
    host = live_server(streaming_app(sent))
    guard = make_guard()
    got: list[bytes] = []
    kill_when(guard, lambda: len(got) >= 3)
    started = time.monotonic()
    with scope(agent_id="stream-bot"), pytest.raises(PolicyViolationError) as caught:
        if sync:
            client = httpx.Client(
                transport=GuardedTransport(guard=guard), base_url=f"http://{host}"
            )
            with client:
                await asyncio.to_thread(read_stream, client, got)
        else:
            transport = AsyncGuardedTransport(guard=guard)
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as ac:
                await aread_stream(ac, got)
    took = time.monotonic() - started
    error = caught.value
    assert error.cancelled and error.reason == "bad answers" and error.action == "http_request"
    assert took < 2.0  # the stream would have run for 4 s
    assert 0 < len(got) < 100
    stopped = one_cancellation(guard)
    assert (stopped.action, stopped.agent_id) == ("http_request", "stream-bot")
    assert stopped.ran_for_ms is not None and 0 < stopped.ran_for_ms < 2000
    counts = guard.counts("agent", "stream-bot")
    assert (counts.executed, counts.cancelled, counts.failed) == (1, 1, 0)
    spans.one_block("execute_tool http_request", "http_request", "CANCELLED")
    sent_then = len(sent)
    await asyncio.sleep(0.3)
    assert len(sent) - sent_then <= 2  # the connection is gone: the server stopped sending


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_kill_aborts_a_request_waiting_for_its_headers(
    make_guard: MakeGuard, live_server: LiveServer, sync: bool
) -> None:
    sent: list[int] = []
    host = live_server(streaming_app(sent))
    guard = make_guard()
    kill_when(guard, lambda: sent == [-1])
    started = time.monotonic()
    with scope(agent_id="stream-bot"), pytest.raises(PolicyViolationError) as caught:
        if sync:
            transport = GuardedTransport(guard=guard)
            with httpx.Client(transport=transport, base_url=f"http://{host}", timeout=60) as c:
                await asyncio.to_thread(c.get, "/slow")
        else:
            transport = AsyncGuardedTransport(guard=guard)
            async with httpx.AsyncClient(
                transport=transport, base_url=f"http://{host}", timeout=60
            ) as ac:
                await ac.get("/slow")
    assert time.monotonic() - started < 2.0
    assert caught.value.cancelled
    assert guard.counts().model_dump()["cancelled"] == 1


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_an_opted_out_transport_lets_the_stream_finish(
    make_guard: MakeGuard, live_server: LiveServer, sync: bool
) -> None:
    host = live_server(streaming_app([]))
    guard = make_guard()
    got: list[bytes] = []
    kill_when(guard, lambda: len(got) >= 3)
    with scope(agent_id="stream-bot"):
        if sync:
            transport = GuardedTransport(guard=guard, cancel_in_flight=False)
            with httpx.Client(transport=transport, base_url=f"http://{host}") as client:
                await asyncio.to_thread(read_stream, client, got)
        else:
            transport = AsyncGuardedTransport(guard=guard, cancel_in_flight=False)
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as ac:
                await aread_stream(ac, got)
    assert b"".join(got).decode().split() == [f"token{i}" for i in range(200)]
    assert guard.interventions() == []
