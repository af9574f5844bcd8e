"""Stream test helpers: one SSE connection read in a thread, and a server run by uvicorn in a
thread of the test process (so the test can configure it in ways no environment variable does)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import connect_sse

from agentguard.server import KillSwitchServer
from support.polling import eventually
from support.processes import free_port

STREAM = "/api/v1/kill-switch/stream"


class StreamReader:
    """Reads one SSE connection in a thread: its status, headers and events, and its end."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.error: Exception | None = None
        self.ready = threading.Event()
        self.ended = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=30.0), cookies=cookies)
        self._args = (url + STREAM, headers or {}, params)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "the stream did not answer"

    def _run(self) -> None:
        url, headers, params = self._args
        try:
            with connect_sse(self._client, "GET", url, headers=headers, params=params) as source:
                self.status = source.response.status_code
                self.headers = dict(source.response.headers)
                if self.status != 200:
                    self.body = source.response.read()
                    self.ready.set()
                    return
                self.ready.set()
                for event in source.iter_sse():
                    if event.data:
                        self.events.append((event.event, event.id, json.loads(event.data)))
        except Exception as exc:  # the connection broke: keep what was read, note why
            self.error = exc
            self.ready.set()
        finally:
            self.ended.set()

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]

    def wait_for(
        self, predicate: Callable[[list[tuple[str, str, Any]]], bool], timeout: float = 10
    ) -> list[tuple[str, str, Any]]:
        """Wait until the events read so far satisfy ``predicate``; return them."""
        eventually(
            lambda: predicate(self.events), timeout, message=lambda: (self.events, self.error)
        )
        return self.events

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


class ThreadServer:
    """A KillSwitchServer served by uvicorn on loopback from a thread of this process."""

    def __init__(self, server: KillSwitchServer) -> None:
        import uvicorn

        self.server = server
        self.port = free_port()
        config = uvicorn.Config(
            server.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)
        self._thread.start()
        eventually(lambda: self._uvicorn.started, 10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(10)
