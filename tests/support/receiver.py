"""A webhook receiver for tests: a real HTTP server on loopback that records every request.

    with Receiver() as receiver:
        server.create_webhook(url=receiver.url("/hook"), ...)
        [request] = receiver.wait_for(1)
        request.json()["type"] == "kill"

``answer`` decides each response (default 200 ``ok``); ``hold()`` keeps requests waiting
until ``release()`` (a receiver that hangs); ``port`` may be fixed so a receiver can come back
on the same address.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.polling import eventually


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


class Receiver:
    """An HTTP server on 127.0.0.1 recording requests, answering as ``answer`` says."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.answer: Callable[[Received], Answer] = lambda request: (200, {}, b"ok")
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._held.set()
        self.arrived = threading.Event()  # set when a request arrives (before it is answered)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = Received(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                receiver.arrived.set()
                receiver._held.wait()
                with receiver._lock:
                    receiver.requests.append(request)
                status, headers, body = receiver.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hold(self) -> None:
        """Keep arriving requests waiting (unanswered and unrecorded) until :meth:`release`."""
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 15.0
    ) -> list[Received]:
        """Wait until at least ``count`` requests (to ``path``) arrived; all of them."""
        eventually(
            lambda: len(self.received(path)) >= count,
            timeout,
            0.02,
            message=lambda: f"received {len(self.received(path))} of {count}",
        )
        return self.received(path)

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
