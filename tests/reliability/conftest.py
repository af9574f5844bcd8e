"""Reliability fixtures: servers on a fresh database and uvicorn processes that can be crashed
and restarted on the same port. The process helpers of ``tests/server`` are reused, not copied.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from reliability_harness import Uvicorn  # noqa: E402

from agentguard.server import KillSwitchServer  # noqa: E402


@pytest.fixture
def make_server() -> Iterator[Callable[..., KillSwitchServer]]:
    """Factory: ``make_server(url, **options)``; every server is closed after the test."""
    servers: list[KillSwitchServer] = []

    def make(database_url: str | None = None, **options: Any) -> KillSwitchServer:
        server = KillSwitchServer(database_url, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def start_uvicorn(tmp_path: Path) -> Iterator[Callable[..., Uvicorn]]:
    """Factory: ``start_uvicorn(database_url, keepalive=0.5, log_level="warning")``."""
    started: list[Uvicorn] = []

    def start(database_url: str, *, keepalive: float = 0.5, log_level: str = "warning") -> Uvicorn:
        server = Uvicorn(database_url, tmp_path, keepalive=keepalive, log_level=log_level)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
