"""gzip for the kill state's answers: whole bodies, and event streams flushed event by event.

A full snapshot of a large organization is megabytes of repetitive JSON; gzip makes it a tenth
of that. It is sent compressed only to a client whose ``Accept-Encoding`` takes gzip (httpx
and browsers send it by default and decode transparently); others get the bytes as before.

An event stream is compressed with a sync flush after every chunk, so each event reaches the
client at once. A snapshot event is compressed once per version (:class:`Deflated`) and spliced
into every stream that sends it: deflate blocks end byte-aligned after a sync flush, and the
stream's own compressor starts afresh after the splice, so none of its back-references reach
into bytes it did not compress. The gzip trailer's CRC and length cover every byte sent.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from dataclasses import dataclass

from starlette.types import Message, Send

LEVEL = 6
# The gzip member header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (and not with ``q=0``)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().replace(" ", "").lower()
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def gzip_bytes(data: bytes | memoryview) -> bytes:
    """``data`` as one gzip member."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@dataclass(frozen=True)
class Deflated:
    """Bytes and their raw deflate blocks (no final block), compressed with no history."""

    data: bytes
    blocks: bytes

    @classmethod
    def of(cls, data: bytes) -> Deflated:
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        return cls(data, compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))


class SpliceSlot:
    """Where the producer of a gzip stream leaves the compressed form of its next chunk."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next: Deflated | None = None


class GzipStream:
    """Wraps an ASGI ``send`` of a streaming response: gzip, flushed after every chunk.

    A body equal to the chunk left in ``splice`` is sent as its precompressed blocks instead of
    being compressed again.
    """

    def __init__(self, send: Send, splice: SpliceSlot) -> None:
        self._send = send
        self._splice = splice
        self._compressor = self._fresh()
        self._crc = 0
        self._size = 0
        self._started = False
        self._lock = asyncio.Lock()  # the keep-alive task sends beside the events

    @staticmethod
    def _fresh() -> zlib._Compress:
        return zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)

    async def __call__(self, message: Message) -> None:
        async with self._lock:
            await self._send(self._encode(message))

    def _encode(self, message: Message) -> Message:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"
            ]
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            return {**message, "headers": headers}
        if message["type"] != "http.response.body":
            return message
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        out = b"" if self._started else _GZIP_HEADER
        self._started = True
        splice = self._splice.next
        if splice is not None and (body is splice.data or body == splice.data):
            self._splice.next = None
            # Every earlier chunk ended in a sync flush: byte-aligned, nothing pending.
            out += splice.blocks
            self._compressor = self._fresh()
        elif body:
            out += self._compressor.compress(body)
            if more:
                out += self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self._crc = zlib.crc32(body, self._crc)
        self._size += len(body)
        if not more:
            out += self._compressor.flush(zlib.Z_FINISH)
            out += struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return {**message, "body": out}
