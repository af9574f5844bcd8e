"""A kill stops a model call in flight: the real OpenAI and Anthropic SDKs (and the httpx2
transports under them) streaming tokens from a real local server, killed from another thread
or task while the tokens arrive."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agentguard import Guard, Intervention, InterventionType, PolicyViolationError, scope
from agentguard.integrations.anthropic import AnthropicPolicyViolationError, guard_anthropic
from agentguard.integrations.httpx2 import AsyncGuardedTransport, GuardedTransport
from agentguard.integrations.openai import guard_openai
from agentguard.pricing import Price
from support import eventually
from support.model_api import chat_json, message_json

if TYPE_CHECKING:
    from conftest import LiveServer, MakeGuard, Spans

GPT, CLAUDE = "gpt-5", "claude-sonnet-4-5"
PRICES = {GPT: Price(1.25, 10.0), CLAUDE: Price(3.0, 15.0)}
MESSAGES: Any = [{"role": "user", "content": "Write me a long story."}]
AGENT = "stream-bot"
PAUSE = 0.02  # seconds between two tokens


def event(data: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


def model_app(sent: list[int], tokens: int = 200) -> Starlette:
    """A model API on loopback, one token every 20 ms: OpenAI chat completions and Anthropic
    messages (streamed when asked), ``/slow/...`` answering only after 30 s, and a plain
    ``/tokens``. ``sent`` notes each token sent (-1: a slow request began)."""

    async def paced(first: list[bytes], token: Callable[[int], bytes], last: list[bytes]) -> Any:
        async def body() -> AsyncIterator[bytes]:
            for chunk in first:
                yield chunk
            for i in range(tokens):
                sent.append(i)
                yield token(i)
                await asyncio.sleep(PAUSE)
            for chunk in last:
                yield chunk

        return body()

    async def chat(request: Request) -> Any:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(chat_json(GPT, 10, 5))
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": GPT, "usage": None}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        usage = {"prompt_tokens": 1_000_000, "completion_tokens": tokens, "total_tokens": 0}
        events = await paced(
            [event(chunk({"role": "assistant", "content": ""}))],
            lambda i: event(chunk({"content": f"tok{i} "})),
            [
                event(chunk({}, "stop")),
                event({**base, "choices": [], "usage": usage}),
                event("[DONE]"),
            ],
        )
        return StreamingResponse(events, media_type="text/event-stream")

    async def messages(request: Request) -> Any:
        start = message_json(CLAUDE, 1_000_000, 1)
        start.update(content=[], stop_reason=None)
        events = await paced(
            [
                event({"type": "message_start", "message": start}, "message_start"),
                event(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                ),
            ],  # fmt: skip
            lambda i: event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": f"tok{i} "},
                },
                "content_block_delta",
            ),  # fmt: skip
            [
                event({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                event(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": tokens},
                    },
                    "message_delta",
                ),
                event({"type": "message_stop"}, "message_stop"),
            ],  # fmt: skip
        )
        return StreamingResponse(events, media_type="text/event-stream")

    async def slow(request: Request) -> JSONResponse:
        sent.append(-1)
        for _ in range(600):  # 30 s, unless the client goes away
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
        return JSONResponse(chat_json(GPT, 10, 5))

    async def plain(request: Request) -> StreamingResponse:
        return StreamingResponse(
            await paced([], lambda i: f"token{i} ".encode(), []), media_type="text/plain"
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/slow/v1/chat/completions", slow, methods=["POST"]),
            Route("/tokens", plain),
        ]
    )


class Killer:
    """Kills the agent once ``ready()``: from another thread (as a remote guard's feed applies
    a kill) or from another asyncio task on the caller's loop; notes when."""

    def __init__(self, guard: Guard, ready: Callable[[], bool]) -> None:
        self.guard = guard
        self.ready = ready
        self.at: float | None = None

    def kill(self) -> None:
        self.at = time.monotonic()
        self.guard.kill("agent", AGENT, reason="bad answers", actor="usr_ops")

    def from_thread(self) -> Killer:
        def run() -> None:
            eventually(self.ready, 10, 0.005)
            self.kill()

        threading.Thread(target=run, daemon=True).start()
        return self

    def from_task(self) -> asyncio.Task[None]:
        async def run() -> None:
            for _ in range(2000):
                if self.ready():
                    self.kill()
                    return
                await asyncio.sleep(0.005)

        return asyncio.create_task(run())


def one_cancellation(guard: Guard) -> Intervention:
    recorded = guard.interventions()
    assert [iv.type for iv in recorded] == [InterventionType.CANCELLED], recorded
    return recorded[0]


def model_span(spans: Spans) -> Any:
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    return span


def check_stopped(
    guard: Guard, spans: Spans, error: PolicyViolationError, killer: Killer, model: str
) -> None:
    """The call ended with the kill's error soon after it, recorded once as CANCELLED."""
    assert killer.at is not None
    assert time.monotonic() - killer.at < 2.0  # a stream had 4 s more to run, a slow answer 30 s
    assert error.cancelled and error.reason == "bad answers" and error.action == "llm"
    stopped = one_cancellation(guard)
    assert (stopped.action, stopped.model, stopped.agent_id) == ("llm", model, AGENT)
    assert stopped.killed_by == "usr_ops"
    assert stopped.ran_for_ms is not None and 0 < stopped.ran_for_ms < 3000
    counts = guard.counts("agent", AGENT)
    assert (counts.executed, counts.cancelled, counts.failed) == (1, 1, 0)
    (block,) = spans.blocks("CANCELLED")
    assert block.name == f"chat {model}"
    assert (block.attributes or {})["gen_ai.request.model"] == model
    span = model_span(spans)  # the model call's own span, ended with the kill's error
    assert (span.attributes or {})["error.type"] == "PolicyViolationError"


def server_stopped(sent: list[int]) -> bool:
    """Whether the server stopped sending: the connection is gone."""
    before = len(sent)
    time.sleep(0.3)
    return len(sent) - before <= 2


# -- OpenAI --------------------------------------------------------------------------------


def openai_client(host: str, guard: Guard, *, asynchronous: bool, **options: Any) -> Any:
    kind = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    plain = kind(api_key="sk-test", base_url=f"http://{host}/v1", timeout=60)
    return guard_openai(plain, guard, prices=PRICES, agent_id=AGENT, **options)


def read_chat(client: openai.OpenAI, got: list[str]) -> None:
    stream = client.chat.completions.create(
        model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    with stream:
        for chunk in stream:
            got.extend(choice.delta.content or "" for choice in chunk.choices)


async def aread_chat(client: openai.AsyncOpenAI, got: list[str]) -> None:
    stream = await client.chat.completions.create(
        model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    async with stream:
        async for chunk in stream:
            got.extend(choice.delta.content or "" for choice in chunk.choices)


@pytest.mark.parametrize(
    "mode", ["sync", "async-thread-kill", "async-task-kill"], ids=lambda mode: mode
)
async def test_a_kill_ends_an_openai_token_stream_midway(
    make_guard: MakeGuard, spans: Spans, live_server: LiveServer, mode: str
) -> None:
    sent: list[int] = []
    host = live_server(model_app(sent))
    guard = make_guard()
    got: list[str] = []
    killer = Killer(guard, lambda: len(got) >= 4)
    client = openai_client(host, guard, asynchronous=mode != "sync")
    with pytest.raises(PolicyViolationError) as caught:
        if mode == "sync":
            killer.from_thread()
            await asyncio.to_thread(read_chat, client, got)
        elif mode == "async-thread-kill":
            killer.from_thread()
            await aread_chat(client, got)
        else:
            task = killer.from_task()
            await aread_chat(client, got)
    if mode == "async-task-kill":
        await task
    assert type(caught.value) is PolicyViolationError  # as the guard raised it, not wrapped
    check_stopped(guard, spans, caught.value, killer, GPT)
    assert 3 <= len(got) < 100
    assert guard.total_cost() == 0  # the stream's usage comes in its last chunk: none seen
    assert await asyncio.to_thread(server_stopped, sent)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_kill_stops_a_model_call_waiting_for_its_answer(
    make_guard: MakeGuard, spans: Spans, live_server: LiveServer, sync: bool
) -> None:
    sent: list[int] = []
    host = live_server(model_app(sent))
    guard = make_guard()
    killer = Killer(guard, lambda: sent == [-1]).from_thread()
    plain_kind = openai.OpenAI if sync else openai.AsyncOpenAI
    plain = plain_kind(api_key="sk-test", base_url=f"http://{host}/slow/v1", timeout=60)
    client: Any = guard_openai(plain, guard, agent_id=AGENT)  # the SDK retries twice
    with pytest.raises(PolicyViolationError) as caught:
        if sync:
            await asyncio.to_thread(client.chat.completions.create, model=GPT, messages=MESSAGES)
        else:
            await client.chat.completions.create(model=GPT, messages=MESSAGES)
    check_stopped(guard, spans, caught.value, killer, GPT)
    assert sent == [-1]  # not retried


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_an_opted_out_openai_client_lets_the_stream_finish(
    make_guard: MakeGuard, live_server: LiveServer, sync: bool
) -> None:
    host = live_server(model_app([], tokens=40))
    guard = make_guard()
    got: list[str] = []
    killer = Killer(guard, lambda: len(got) >= 4).from_thread()
    client = openai_client(host, guard, asynchronous=not sync, cancel_in_flight=False)
    if sync:
        await asyncio.to_thread(read_chat, client, got)
    else:
        await aread_chat(client, got)
    assert killer.at is not None
    assert "".join(got).split() == [f"tok{i}" for i in range(40)]
    assert guard.interventions() == []
    assert guard.total_cost() == pytest.approx(1.25 + 40 * 10.0 / 1e6)  # its last chunk's usage
    with pytest.raises(PolicyViolationError):  # the next call is refused all the same
        if sync:
            await asyncio.to_thread(read_chat, client, got)
        else:
            await aread_chat(client, got)


# -- Anthropic -----------------------------------------------------------------------------


def read_message(client: anthropic.Anthropic, got: list[str]) -> None:
    with client.messages.stream(model=CLAUDE, max_tokens=4096, messages=MESSAGES) as stream:
        for text in stream.text_stream:
            got.append(text)


async def aread_message(client: anthropic.AsyncAnthropic, got: list[str]) -> None:
    stream = await client.messages.create(
        model=CLAUDE, max_tokens=4096, messages=MESSAGES, stream=True
    )
    async for item in stream:
        if item.type == "content_block_delta" and item.delta.type == "text_delta":
            got.append(item.delta.text)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_kill_ends_an_anthropic_message_stream_midway_with_its_usage(
    make_guard: MakeGuard, spans: Spans, live_server: LiveServer, sync: bool
) -> None:
    sent: list[int] = []
    host = live_server(model_app(sent))
    guard = make_guard()
    got: list[str] = []
    killer = Killer(guard, lambda: len(got) >= 4).from_thread()
    kind = anthropic.Anthropic if sync else anthropic.AsyncAnthropic
    plain = kind(api_key="sk-test", base_url=f"http://{host}", timeout=60)
    client: Any = guard_anthropic(plain, guard, prices=PRICES, agent_id=AGENT)
    with pytest.raises(AnthropicPolicyViolationError) as caught:
        if sync:
            await asyncio.to_thread(read_message, client, got)
        else:
            await aread_message(client, got)
    assert isinstance(caught.value, anthropic.AnthropicError)  # the SDK passes it on as it is
    check_stopped(guard, spans, caught.value, killer, CLAUDE)
    assert 3 <= len(got) < 100
    # message_start's usage was seen before the stop: its input tokens are spent
    assert guard.cost("agent", AGENT) == pytest.approx(3.0 + 15.0 / 1e6)
    attrs = model_span(spans).attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 1_000_000
    assert await asyncio.to_thread(server_stopped, sent)


# -- the httpx2 transports ------------------------------------------------------------------


def read_tokens(client: httpx2.Client, got: list[bytes]) -> None:
    with client.stream("GET", "/tokens") as response:
        for chunk in response.iter_raw():
            got.append(chunk)


async def aread_tokens(client: httpx2.AsyncClient, got: list[bytes]) -> None:
    async with client.stream("GET", "/tokens") as response:
        async for chunk in response.aiter_raw():
            got.append(chunk)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_kill_ends_an_httpx2_streaming_response_midway(
    make_guard: MakeGuard, spans: Spans, live_server: LiveServer, sync: bool
) -> None:
    sent: list[int] = []
    host = live_server(model_app(sent))
    guard = make_guard()
    got: list[bytes] = []
    killer = Killer(guard, lambda: len(got) >= 3).from_thread()
    with scope(agent_id=AGENT), pytest.raises(PolicyViolationError) as caught:
        if sync:
            transport = GuardedTransport(guard=guard)
            with httpx2.Client(transport=transport, base_url=f"http://{host}") as client:
                await asyncio.to_thread(read_tokens, client, got)
        else:
            atransport = AsyncGuardedTransport(guard=guard)
            async with httpx2.AsyncClient(transport=atransport, base_url=f"http://{host}") as ac:
                await aread_tokens(ac, got)
    assert killer.at is not None and time.monotonic() - killer.at < 2.0
    error = caught.value
    assert error.cancelled and error.action == "http_request"
    assert 0 < len(got) < 100
    stopped = one_cancellation(guard)
    assert (stopped.action, stopped.agent_id, stopped.model) == ("http_request", AGENT, None)
    counts = guard.counts("agent", AGENT)
    assert (counts.executed, counts.cancelled, counts.failed) == (1, 1, 0)
    spans.one_block("execute_tool http_request", "http_request", "CANCELLED")
    assert await asyncio.to_thread(server_stopped, sent)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_an_opted_out_httpx2_transport_lets_the_stream_finish(
    make_guard: MakeGuard, live_server: LiveServer, sync: bool
) -> None:
    host = live_server(model_app([], tokens=40))
    guard = make_guard()
    got: list[bytes] = []
    Killer(guard, lambda: len(got) >= 3).from_thread()
    with scope(agent_id=AGENT):
        if sync:
            transport = GuardedTransport(guard=guard, cancel_in_flight=False)
            with httpx2.Client(transport=transport, base_url=f"http://{host}") as client:
                await asyncio.to_thread(read_tokens, client, got)
        else:
            atransport = AsyncGuardedTransport(guard=guard, cancel_in_flight=False)
            async with httpx2.AsyncClient(transport=atransport, base_url=f"http://{host}") as ac:
                await aread_tokens(ac, got)
    assert b"".join(got).decode().split() == [f"token{i}" for i in range(40)]
    assert guard.interventions() == []
