"""httpx2 transports: plain requests checked as ``http_request``; model calls checked as
``llm`` with their model, and their usage read from the body as the caller consumes it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from integration_contract import Body, IntegrationContract

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations._model import ModelGate
from agentguard.integrations._usage import ANTHROPIC, OPENAI, Reading
from agentguard.integrations.httpx2 import (
    AsyncGuardedTransport,
    AsyncModelTransport,
    GuardedTransport,
    ModelTransport,
)
from agentguard.pricing import Usage
from support.model_api import (
    ScriptedAPI,
    chat_json,
    chat_sse,
    chunks,
    message_json,
    message_sse,
    reply,
    response_json,
    response_sse,
    status,
)

if TYPE_CHECKING:
    from conftest import MakeGuard, Spans

URL = "https://api.openai.com/v1/chat/completions"
PRICES = {"gpt-5": (1.25, 10.0)}


def chat(client: httpx2.Client, model: str = "gpt-5", **extra: Any) -> httpx2.Response:
    return client.post(URL, json={"model": model, "messages": [], **extra})


class TestContract(IntegrationContract):
    """The plain sync and async transports keep the integration contract."""

    action = "http_request"
    on_block = ("raise",)

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        inner = httpx2.MockTransport(lambda request: httpx2.Response(200, text=body()))
        return (
            GuardedTransport(inner, guard, **ids),
            AsyncGuardedTransport(inner, guard, **ids),
        )

    async def call(self, made: Any, *, sync: bool) -> Any:
        transport, async_transport = made
        if sync:
            with httpx2.Client(transport=transport) as client:
                return client.get("https://api.example.com/").text
        async with httpx2.AsyncClient(transport=async_transport) as aclient:
            return (await aclient.get("https://api.example.com/")).text

    def undo(self, made: Any) -> Any:
        return made[0].inner, made[1].inner


def test_a_model_call_is_checked_as_llm_and_other_requests_as_http_request(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda b: chat_json("gpt-5-2025-08-07", 10, 5)))
    files = [lambda request, body, _: httpx2.Response(200, json={"data": []})] * 2
    api.add(*files)
    with httpx2.Client(transport=ModelTransport(api.transport(), ModelGate(guard))) as client:
        assert chat(client).json()["model"] == "gpt-5-2025-08-07"
        guard.kill("tool", "llm")
        with pytest.raises(PolicyViolationError):
            chat(client)
        assert client.get("https://api.openai.com/v1/files").json() == {"data": []}
        # a JSON POST that names no model is no model call
        assert client.post("https://api.openai.com/v1/files", json={"purpose": "x"}).is_success
        guard.kill("tool", "http_request")
        with pytest.raises(PolicyViolationError):
            client.get("https://api.openai.com/v1/files")
    assert len(api.requests) == 3  # refused requests never reached the API
    assert guard.counts(action="llm").executed == 1
    assert guard.counts(action="http_request").executed == 2
    assert [(iv.action, iv.model) for iv in guard.interventions()] == [
        ("http_request", None),
        ("llm", "gpt-5"),
    ]


def test_usage_is_read_from_a_chunked_gzipped_json_body(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda b: chat_json("gpt-5", 1_000_000, 0), gzipped=True))
    gate = ModelGate(guard, prices=PRICES)
    with httpx2.Client(transport=ModelTransport(api.transport(), gate)) as client:
        assert chat(client).json()["usage"]["prompt_tokens"] == 1_000_000
    assert guard.total_cost() == pytest.approx(1.25)


def test_a_stream_is_read_as_the_caller_consumes_it(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda b: chat_sse("gpt-5", 1_000_000, 100_000)))
    gate = ModelGate(guard, prices=PRICES)
    with httpx2.Client(transport=ModelTransport(api.transport(), gate)) as client:
        request = client.build_request("POST", URL, json={"model": "gpt-5", "stream": True})
        response = client.send(request, stream=True)
        parts = response.iter_raw()
        next(parts)
        assert guard.total_cost() == 0  # nothing recorded while the stream is open
        body = b"".join(parts)
        assert body.endswith(b"data: [DONE]\n\n")
        assert guard.total_cost() == pytest.approx(1.25 + 1.0)  # recorded at its end
        response.close()
    assert guard.total_cost() == pytest.approx(2.25)  # once


def test_a_stream_stopped_early_records_what_was_seen(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    body = message_sse("claude-haiku-4-5", 1_000_000, 500)
    cut = body.index(b"event: content_block_delta")  # message_start and its input tokens seen
    api = ScriptedAPI(reply(lambda b: body))
    gate = ModelGate(guard, prices={"claude-haiku-4-5": (1.0, 5.0)})
    transport = ModelTransport(api.transport(), gate, ANTHROPIC)
    with httpx2.Client(transport=transport) as client:
        request = client.build_request(
            "POST", "https://api.anthropic.com/v1/messages", json={"model": "claude-haiku-4-5"}
        )
        response = client.send(request, stream=True)
        seen = b""
        for chunk in response.iter_raw():
            seen += chunk
            if len(seen) > cut + 5:
                break
        response.close()
    assert guard.total_cost() == pytest.approx(1.0 + 5e-6)  # input, and the 1 output token
    (span,) = spans.exporter.get_finished_spans()
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] == 1_000_000


def test_error_statuses_and_transport_errors_count_as_failed(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()

    def broken(request: httpx2.Request, body: Any, _: bool) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    api = ScriptedAPI(status(503), status(429), status(400), broken)
    api.add(reply(lambda b: chat_json("gpt-5", 1, 1)))
    with httpx2.Client(transport=ModelTransport(api.transport(), ModelGate(guard))) as client:
        assert [chat(client).status_code for _ in range(3)] == [503, 429, 400]
        with pytest.raises(httpx2.ConnectError):
            chat(client)
        assert chat(client).status_code == 200
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (5, 4)
    errors = [(s.attributes or {}).get("error.type") for s in spans.exporter.get_finished_spans()]
    assert errors == ["503", "429", "400", "ConnectError", None]


def test_an_error_event_in_a_stream_counts_as_failed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda b: message_sse("claude-haiku-4-5", 10, 0, error=True)))
    transport = ModelTransport(api.transport(), ModelGate(guard), ANTHROPIC)
    with httpx2.Client(transport=transport) as client:
        response = client.post(
            "https://api.anthropic.com/v1/messages", json={"model": "claude-haiku-4-5"}
        )
        assert b"overloaded_error" in response.content
    assert guard.counts(action="llm").failed == 1


async def test_the_async_transport_checks_and_reads_usage(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(asynchronous=True)
    api.add(reply(lambda b: response_sse("gpt-5", 1_000_000, 0)), reply(lambda b: {"ok": 1}))
    gate = ModelGate(guard, prices=PRICES, agent_id="bot")
    async with httpx2.AsyncClient(transport=AsyncModelTransport(api.transport(), gate)) as client:
        url = "https://api.openai.com/v1/responses"
        async with client.stream("POST", url, json={"model": "gpt-5", "stream": True}) as r:
            assert b"response.completed" in b"".join([c async for c in r.aiter_raw()])
        assert guard.cost("agent", "bot") == pytest.approx(1.25)
        assert (await client.get("https://api.openai.com/v1/models")).json() == {"ok": 1}
        guard.kill("agent", "bot")
        with pytest.raises(PolicyViolationError):
            await client.post(url, json={"model": "gpt-5"})
        with pytest.raises(PolicyViolationError):
            await client.get("https://api.openai.com/v1/models")
    assert len(api.requests) == 2


def test_ids_come_from_the_gate_then_the_scope(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "llm")
    api = ScriptedAPI()
    for gate in (ModelGate(guard), ModelGate(guard, run_id="fixed")):
        with httpx2.Client(transport=ModelTransport(api.transport(), gate)) as client:
            with scope(agent_id="scoped", run_id="r"), pytest.raises(PolicyViolationError):
                chat(client)
    assert [(iv.agent_id, iv.run_id) for iv in reversed(guard.interventions())] == [
        ("scoped", "r"),
        ("scoped", "fixed"),
    ]


@pytest.mark.parametrize(
    ("wire", "body", "expected"),
    [
        (OPENAI, json.dumps(chat_json("gpt-5-x", 12, 3, cached=4)).encode(), (12, 3, 4, 0)),
        (OPENAI, chat_sse("gpt-5-x", 12, 3), (12, 3, 0, 0)),
        (OPENAI, json.dumps(response_json("gpt-5-x", 12, 3)).encode(), (12, 3, 0, 0)),
        (OPENAI, response_sse("gpt-5-x", 12, 3), (12, 3, 0, 0)),
        (
            ANTHROPIC,
            json.dumps(message_json("gpt-5-x", 12, 3, cache_read=100, cache_write=20)).encode(),
            (132, 3, 100, 20),
        ),
        (ANTHROPIC, message_sse("gpt-5-x", 12, 3, cache_read=100), (112, 3, 100, 0)),
    ],
)
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_readings_of_every_body_in_any_chunking(
    wire: Any, body: bytes, expected: tuple[int, int, int, int], size: int
) -> None:
    kind = "text/event-stream" if body.startswith((b"data:", b"event:")) else "application/json"
    reading = Reading(wire, kind, "")
    for chunk in chunks(body, size):
        reading.feed(chunk)
    usage, failed = reading.result()
    assert usage is not None and not failed
    found = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_input_tokens,
    )
    assert found == expected
    assert usage.model == "gpt-5-x"


def test_a_stream_without_usage_records_no_tokens() -> None:
    reading = Reading(OPENAI, "text/event-stream", "")
    reading.feed(chat_sse("gpt-5", 10, 5, usage=False))
    assert reading.result() == (None, False)


def test_a_body_it_cannot_read_yields_nothing_and_never_raises() -> None:
    for kind, encoding, body in [
        ("application/json", "", b"{not json"),
        ("application/json", "gzip", b"not gzip at all"),
        ("application/json", "compress", b"\x1f\x9d"),
        ("text/event-stream", "", b"data: {broken\n\ndata: [DONE]\n\n"),
    ]:
        reading = Reading(OPENAI, kind, encoding)
        reading.feed(body)
        assert reading.result() == (None, False)


def test_a_responses_failure_event_marks_the_call_failed() -> None:
    failed = response_json("gpt-5", 5, 0, status="failed")
    failed["error"] = {"code": "server_error", "message": "The model failed."}
    body = b"event: response.failed\ndata: " + json.dumps(
        {"type": "response.failed", "response": failed}
    ).encode() + b"\n\n"  # fmt: skip
    reading = Reading(OPENAI, "text/event-stream", "")
    reading.feed(body)
    usage, was_failed = reading.result()
    assert was_failed and usage == Usage(5, 0, model="gpt-5", response_id=failed["id"])
