"""Server fixtures: servers on a fresh database, API clients, and uvicorn processes (the generic
``start_process`` and ``live`` are in tests/conftest.py, for the remote source's tests too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from agentguard.server import KillSwitchServer
from support.api import Api
from support.live import uvicorn_argv
from support.processes import Process

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ServerFactory = Callable[..., KillSwitchServer]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (playwright is imported by browser tests only)."""
    from support.browser import chromium_browser

    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def server(make_server: ServerFactory, database_url: str) -> KillSwitchServer:
    """A started server on a fresh SQLite file or PostgreSQL database."""
    s = make_server(database_url)
    s.start()
    return s


@pytest.fixture
def api() -> Callable[..., Api]:
    """Factory: ``api(server, org="org_a", scopes=("admin",), owner="usr_abc", agents=None)``.

    An agent key speaks for any agent unless ``agents`` says otherwise.
    """

    def make(
        server: KillSwitchServer,
        org: str = "org_a",
        scopes: tuple[str, ...] = ("admin",),
        owner: str = "usr_abc",
        agents: list[str] | None = None,
    ) -> Api:
        return Api(server, org, list(scopes), owner, agents)

    return make


@pytest.fixture
def start_uvicorn(start_process: Callable[..., Process]) -> Callable[..., Process]:
    """Factory: ``start_uvicorn(database_url, workers=1)`` runs the API in uvicorn."""

    def start(database_url: str, *, workers: int = 1) -> Process:
        argv = uvicorn_argv(workers=workers)
        return start_process(argv, env={"AGENTGUARD_DATABASE_URL": database_url})

    return start
