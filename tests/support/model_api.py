"""Scripted OpenAI and Anthropic APIs for an httpx2 ``MockTransport``: their JSON and
server-sent event bodies as the providers send them, streamed in small chunks."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
from httpx2 import Response

CHUNK = 7  # bytes per chunk of a streamed body: events and JSON split anywhere


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    """An event stream: ``(event name or None, data)``; data is JSON-encoded unless bytes."""
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        body = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":"))
        text = body.decode() if isinstance(body, bytes) else body
        out.append(f"{head}data: {text}\n\n")
    return "".join(out).encode()


# -- OpenAI chat completions ---------------------------------------------------------------


def chat_json(model: str, prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Your order shipped yesterday.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": None,
    }


def chat_sse(model: str, prompt: int, completion: int, *, usage: bool = True) -> bytes:
    base = {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **({"usage": None} if usage else {})}

    events: list[tuple[str | None, Any]] = [
        (None, chunk({"role": "assistant", "content": "", "refusal": None})),
        *[(None, chunk({"content": word})) for word in ("Your ", "order ", "shipped.")],
        (None, chunk({}, "stop")),
    ]
    if usage:
        tokens = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        events.append((None, {**base, "choices": [], "usage": tokens}))
    events.append((None, b"[DONE]"))
    return sse(events)


# -- OpenAI Responses API ----------------------------------------------------------------


def response_json(
    model: str, inputs: int, outputs: int, *, status: str = "completed", usage: bool = True
) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Your order shipped.", "annotations": []}
                ],
            }
        ]
        if status == "completed"
        else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": inputs,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": outputs,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inputs + outputs,
        }
        if usage
        else None,
        "user": None,
        "metadata": {},
    }


def response_sse(model: str, inputs: int, outputs: int, *, complete: bool = True) -> bytes:
    started = {**response_json(model, 0, 0, status="in_progress", usage=False)}
    item = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": started}),
        ("response.in_progress", {"type": "response.in_progress", "sequence_number": 1,
                                  "response": started}),
        ("response.output_item.added", {
            "type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
            "item": {"id": item, "type": "message", "status": "in_progress",
                     "role": "assistant", "content": []}}),
        ("response.content_part.added", {
            "type": "response.content_part.added", "sequence_number": 3, "item_id": item,
            "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
    ]  # fmt: skip
    for n, word in enumerate(("Your ", "order ", "shipped.")):
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 4 + n,
                    "item_id": item,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                    "logprobs": [],
                },
            )
        )
    if complete:
        events.append(
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "sequence_number": 7,
                    "response": response_json(model, inputs, outputs),
                },
            )
        )
    return sse(events)


# -- Anthropic messages ------------------------------------------------------------------


def message_json(
    model: str, inputs: int, outputs: int, *, cache_read: int = 0, cache_write: int = 0
) -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Your order shipped."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": inputs,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": outputs,
            "service_tier": "standard",
        },
    }


def message_sse(
    model: str, inputs: int, outputs: int, *, cache_read: int = 0, error: bool = False
) -> bytes:
    start = message_json(model, inputs, 1, cache_read=cache_read)
    start.update(content=[], stop_reason=None)
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]  # fmt: skip
    for word in ("Your ", "order ", "shipped."):
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                },
            )
        )
    if error:
        events.append(
            (
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
        )
        return sse(events)
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": outputs}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return sse(events)


# -- the scripted API ----------------------------------------------------------------------


def chunks(body: bytes, size: int = CHUNK) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def achunks(body: bytes, size: int = CHUNK) -> Any:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def streamed(
    body: bytes | dict[str, Any],
    *,
    status: int = 200,
    content_type: str | None = None,
    gzipped: bool = False,
    asynchronous: bool = False,
) -> httpx2.Response:
    """A response whose body arrives in chunks (not read ahead), as from the network."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = content_type or ("application/json" if isinstance(body, dict) else "text/event-stream")
    headers = {"content-type": kind, "x-request-id": "req_123", "request-id": "req_123"}
    if gzipped:
        raw = gzip.compress(raw)
        headers["content-encoding"] = "gzip"
    content: Any = achunks(raw) if asynchronous else chunks(raw)
    return httpx2.Response(status, headers=headers, content=content)


Reply = Callable[[httpx2.Request, dict[str, Any], bool], httpx2.Response]


class ScriptedAPI:
    """A MockTransport handler: answers each request with the next scripted reply."""

    def __init__(self, *replies: Reply, asynchronous: bool = False) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.asynchronous = asynchronous

    def add(self, *replies: Reply) -> ScriptedAPI:
        self.replies.extend(replies)
        return self

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        body = json.loads(request.content) if request.content else {}
        self.bodies.append(body)
        if not self.replies:
            return httpx2.Response(500, json={"error": {"message": "no reply scripted"}})
        return self.replies.pop(0)(request, body, self.asynchronous)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


def reply(make: Callable[[dict[str, Any]], bytes | dict[str, Any]], **options: Any) -> Reply:
    """A scripted reply built from the request body (``make(body)``), streamed in chunks."""

    def answer(request: httpx2.Request, body: dict[str, Any], asynchronous: bool) -> Response:
        return streamed(make(body), asynchronous=asynchronous, **options)

    return answer


def status(code: int, payload: dict[str, Any] | None = None) -> Reply:
    """A scripted error status (read at once, as error bodies are small); a retry may follow
    after a millisecond."""

    def answer(request: httpx2.Request, body: dict[str, Any], asynchronous: bool) -> Response:
        error = payload or {"error": {"message": f"status {code}", "type": "server_error"}}
        return httpx2.Response(code, json=error, headers={"retry-after-ms": "1"})

    return answer
