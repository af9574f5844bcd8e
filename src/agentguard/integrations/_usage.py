"""Token usage as the OpenAI and Anthropic HTTP APIs report it, read as the bytes pass.

A ``Reading`` is fed a response body chunk by chunk (whatever the caller consumes, as it
consumes it: nothing is buffered ahead of the caller) and says at the end what it saw:

- a JSON body: its ``usage`` (chat completions, completions, embeddings, the Responses API,
  Anthropic messages);
- a server-sent event stream: OpenAI chat chunks (the last one carries ``usage`` when the
  request asked for ``stream_options={"include_usage": True}``), the Responses API's
  ``response.completed`` / ``response.incomplete`` / ``response.failed`` events, Anthropic's
  ``message_start`` usage updated by each ``message_delta``; an ``error`` event marks the call
  failed. Only the events that can carry usage are parsed.

A body compressed with gzip or deflate is decompressed for reading (zstd and brotli too, when
their packages are installed, as httpx2 itself needs them to ask for those). Reading never
raises: a body it cannot make sense of yields no usage, and the caller's bytes are untouched.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

from .. import semconv as sc
from ..pricing import Usage

logger = logging.getLogger("agentguard")

__all__ = ["ANTHROPIC", "OPENAI", "Reading", "Wire"]

MAX_JSON_BODY = 32 * 1024 * 1024  # a larger JSON body (embeddings of a big batch) is not read


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Wire:
    """One provider's API: which operation a path is, and where its responses keep usage."""

    provider = ""
    events: frozenset[str] = frozenset()  # SSE event names that can carry usage or an error

    def operation(self, path: str) -> str:
        return sc.OPERATION_CHAT

    def body(self, obj: dict[str, Any]) -> tuple[Usage | None, bool]:
        """The usage of a JSON response, and whether it reports a failure."""
        raise NotImplementedError

    def wants(self, event: str | None, data: bytes) -> bool:
        """Whether an SSE event is worth parsing."""
        raise NotImplementedError

    def event(self, seen: dict[str, Any], event: str | None, obj: dict[str, Any]) -> None:
        """Update ``seen`` (``usage``, ``failed``) with one parsed SSE event."""
        raise NotImplementedError


class OpenAIWire(Wire):
    provider = "openai"
    events = frozenset(
        {"response.completed", "response.incomplete", "response.failed", "response.error", "error"}
    )

    def operation(self, path: str) -> str:
        if path.endswith("/embeddings"):
            return sc.OPERATION_EMBEDDINGS
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return sc.OPERATION_TEXT_COMPLETION
        return sc.OPERATION_CHAT

    @staticmethod
    def usage(raw: Any, model: Any, response_id: Any) -> Usage | None:
        """Chat/completions/embeddings (``prompt_tokens``...) or Responses (``input_tokens``)."""
        raw = _dict(raw)
        if not raw:
            return None
        if "prompt_tokens" in raw:
            inputs, outputs = _int(raw.get("prompt_tokens")), _int(raw.get("completion_tokens"))
            details = _dict(raw.get("prompt_tokens_details"))
        else:
            inputs, outputs = _int(raw.get("input_tokens")), _int(raw.get("output_tokens"))
            details = _dict(raw.get("input_tokens_details"))
        return Usage(
            input_tokens=inputs,
            output_tokens=outputs,
            cached_input_tokens=_int(details.get("cached_tokens")),
            model=_str(model),
            response_id=_str(response_id),
        )

    def body(self, obj: dict[str, Any]) -> tuple[Usage | None, bool]:
        failed = obj.get("status") == "failed" or bool(obj.get("error"))
        return self.usage(obj.get("usage"), obj.get("model"), obj.get("id")), failed

    def wants(self, event: str | None, data: bytes) -> bool:
        if event is not None and event.startswith("response."):
            return event in self.events
        if event == "error" or b'"error"' in data:
            return True
        return b'"usage"' in data and b'"usage":null' not in data

    def event(self, seen: dict[str, Any], event: str | None, obj: dict[str, Any]) -> None:
        kind = obj.get("type") if isinstance(obj.get("type"), str) else event
        if kind in ("error", "response.failed", "response.error") or obj.get("error"):
            seen["failed"] = True
        response = obj.get("response")
        if isinstance(response, dict):  # the Responses API: the response in its final event
            usage = self.usage(response.get("usage"), response.get("model"), response.get("id"))
        else:  # a chat completion chunk
            usage = self.usage(obj.get("usage"), obj.get("model"), obj.get("id"))
        if usage is not None:
            seen["usage"] = usage


class AnthropicWire(Wire):
    provider = "anthropic"
    events = frozenset({"message_start", "message_delta", "error"})
    _FIELDS = (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )

    @staticmethod
    def usage(raw: dict[str, Any], model: Any, response_id: Any) -> Usage:
        """Anthropic counts cache reads and writes apart from ``input_tokens``: add them."""
        read = _int(raw.get("cache_read_input_tokens"))
        written = _int(raw.get("cache_creation_input_tokens"))
        return Usage(
            input_tokens=_int(raw.get("input_tokens")) + read + written,
            output_tokens=_int(raw.get("output_tokens")),
            cached_input_tokens=read,
            cache_write_input_tokens=written,
            model=_str(model),
            response_id=_str(response_id),
        )

    def body(self, obj: dict[str, Any]) -> tuple[Usage | None, bool]:
        failed = obj.get("type") == "error"
        raw = _dict(obj.get("usage"))
        usage = self.usage(raw, obj.get("model"), obj.get("id")) if raw else None
        return usage, failed

    def wants(self, event: str | None, data: bytes) -> bool:
        if event is not None:
            return event in self.events
        return b'"type":"message_' in data or b'"type":"error"' in data

    def event(self, seen: dict[str, Any], event: str | None, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "error":
            seen["failed"] = True
            return
        raw: dict[str, Any] = seen.setdefault("raw", {})
        if kind == "message_start":
            message = _dict(obj.get("message"))
            seen["model"], seen["id"] = message.get("model"), message.get("id")
            raw.update(_dict(message.get("usage")))
        elif kind == "message_delta":  # cumulative counts: the latest wins where given
            raw.update({k: v for k, v in _dict(obj.get("usage")).items() if v is not None})
        else:
            return
        seen["usage"] = self.usage(raw, seen.get("model"), seen.get("id"))


OPENAI = OpenAIWire()
ANTHROPIC = AnthropicWire()


class Reading:
    """The usage one response reports, read from its body as the caller consumes it."""

    __slots__ = ("wire", "sse", "_decode", "_body", "_size", "_pending", "_event", "_data",
                 "seen", "broken")  # fmt: skip

    def __init__(self, wire: Wire, content_type: str, content_encoding: str) -> None:
        self.wire = wire
        self.sse = content_type[:17].lower() == "text/event-stream"
        self._decode = _decoder(content_encoding) if content_encoding else _same
        self._body: list[bytes] = []
        self._size = 0
        self._pending = b""
        self._event: str | None = None
        self._data: list[bytes] = []
        self.seen: dict[str, Any] = {}
        self.broken = self._decode is None  # an encoding it cannot undo: read nothing

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body (as it arrived). Never raises."""
        if self.broken or not chunk:
            return
        try:
            assert self._decode is not None
            data = self._decode(chunk)
            if self.sse:
                self._lines(data)
            elif self._size + len(data) <= MAX_JSON_BODY:
                self._body.append(data)
                self._size += len(data)
            else:
                self.broken = True
                self._body.clear()
        except Exception:
            self.broken = True
            logger.warning("agentguard: could not read a %s response's usage", self.wire.provider)

    def result(self) -> tuple[Usage | None, bool]:
        """The usage seen (``None``: none), and whether the response reported a failure."""
        if not self.broken and not self.sse and self._body:
            try:
                obj = json.loads(b"".join(self._body))
            except ValueError:
                return None, False
            finally:
                self._body.clear()
            if isinstance(obj, dict):
                return self.wire.body(obj)
            return None, False
        if self.sse and not self.broken and (self._pending or self._data):
            try:  # a stream cut off before its last blank line: take its last event
                self._lines(b"\n\n")
            except Exception:
                logger.warning("agentguard: could not read a %s stream's end", self.wire.provider)
        return self.seen.get("usage"), bool(self.seen.get("failed"))

    def _lines(self, data: bytes) -> None:
        buffer = self._pending + data if self._pending else data
        *lines, self._pending = buffer.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch()
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")

    def _dispatch(self) -> None:
        event, data = self._event, b"\n".join(self._data)
        self._event, self._data = None, []
        if not data or data == b"[DONE]" or not self.wire.wants(event, data):
            return
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if isinstance(obj, dict):
            self.wire.event(self.seen, event, obj)


def _decoder(content_encoding: str) -> Callable[[bytes], bytes] | None:
    """A function undoing the body's content codings, in order; ``None`` if one is unknown."""
    steps: list[Callable[[bytes], bytes]] = []
    for coding in reversed([c.strip().lower() for c in content_encoding.split(",")]):
        if coding in ("", "identity"):
            continue
        step = _step(coding)
        if step is None:
            return None
        steps.append(step)
    if not steps:
        return _same
    if len(steps) == 1:
        return steps[0]

    def chain(data: bytes) -> bytes:
        for step in steps:
            data = step(data)
        return data

    return chain


def _same(data: bytes) -> bytes:
    return data


def _step(coding: str) -> Callable[[bytes], bytes] | None:
    if coding == "gzip":
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress
    if coding == "deflate":
        return _Deflate().decompress
    if coding == "zstd":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.ZstdDecompressor().decompressobj().decompress
    if coding == "br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            return None
        return brotli.Decompressor().process  # type: ignore[no-any-return]
    return None


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped, or (wrongly, but often) raw."""

    def __init__(self) -> None:
        self._inner: Any = None
        self._first = True

    def decompress(self, data: bytes) -> bytes:
        if self._first:
            self._first = False
            try:
                self._inner = zlib.decompressobj()
                return bytes(self._inner.decompress(data))
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return bytes(self._inner.decompress(data))
