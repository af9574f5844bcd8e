"""Reliability fixtures: uvicorn processes that can be crashed and restarted on the same port
(``make_server`` is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.reliability import Uvicorn


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
