"""Fixtures shared by the integration tests: guards with an in-memory span exporter."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentguard import Guard, Intervention, InterventionType
from support import eventually


class Spans:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test-agent")

    def blocks(self, kind: str = "HARD_BLOCK") -> list[ReadableSpan]:
        """Spans of refused calls (``kind="CANCELLED"``: of calls stopped while they ran;
        operator kill/revive spans left out)."""
        return [
            s
            for s in self.exporter.get_finished_spans()
            if (s.attributes or {}).get("agentguard.intervention.type") == kind
        ]

    def one_block(self, name: str, tool: str, kind: str = "HARD_BLOCK") -> ReadableSpan:
        """The single HARD_BLOCK (or ``kind``) span, checked for name, status and the standard
        attributes."""
        blocks = self.blocks(kind)
        assert len(blocks) == 1, [s.name for s in blocks]
        span = blocks[0]
        attrs = span.attributes or {}
        assert span.name == name
        assert span.status.status_code is StatusCode.ERROR
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == tool
        assert attrs["error.type"] == "PolicyViolationError"
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


@pytest.fixture
def make_guard(spans: Spans) -> Iterator[Callable[..., Guard]]:
    """Factory: a fresh in-memory guard reporting spans to ``spans``; closed after the test."""
    made: list[Guard] = []

    def make(**kwargs: Any) -> Guard:
        guard = Guard(tracer_provider=spans.provider, instance_id="test-instance", **kwargs)
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.close()


def one_hard_block(guard: Guard) -> Intervention:
    """The single intervention the guard recorded, checked to be a HARD_BLOCK."""
    recorded = guard.interventions()
    assert len(recorded) == 1, recorded
    assert recorded[0].type is InterventionType.HARD_BLOCK
    return recorded[0]


@pytest.fixture
def hard_block() -> Callable[[Guard], Intervention]:
    return one_hard_block


def one_cancellation(guard: Guard) -> Intervention:
    """The single intervention the guard recorded, checked to be a call stopped in flight."""
    recorded = guard.interventions()
    assert len(recorded) == 1, recorded
    assert recorded[0].type is InterventionType.CANCELLED
    assert recorded[0].ran_for_ms is not None
    return recorded[0]


@pytest.fixture
def cancellation() -> Callable[[Guard], Intervention]:
    return one_cancellation


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], str]]:
    """Factory: serve an ASGI app with uvicorn on a free loopback port; returns its base URL."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="websockets-sansio")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        eventually(lambda: server.started or not thread.is_alive(), 10)
        assert server.started, "uvicorn stopped before it started"
        return f"127.0.0.1:{port}"

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


MakeGuard = Callable[..., Guard]
HardBlock = Callable[[Guard], Intervention]
LiveServer = Callable[[Any], str]
