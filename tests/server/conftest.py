"""Server fixtures: servers on a fresh database, API clients, and real uvicorn processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentguard.server import KillSwitchServer
from support.api import Api
from support.live import Live, start_live, uvicorn_argv
from support.processes import Process, free_port, stop, wait_until_serving

ServerFactory = Callable[..., KillSwitchServer]


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
def start_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory: run ``argv`` (a server) with env vars on a free port; stopped in teardown."""
    processes: list[Process] = []

    def start(
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> Process:
        port = port or free_port()
        log = tmp_path / f"server-{port}.log"
        full_env = {**os.environ, **(env or {})}
        popen = subprocess.Popen(
            [a.replace("{port}", str(port)) for a in argv],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=tmp_path,
            start_new_session=True,
        )
        process = Process(popen, port, log)
        processes.append(process)
        if wait:
            wait_until_serving(process)
        return process

    yield start
    for process in processes:
        stop(process)


@pytest.fixture
def start_uvicorn(start_process: Callable[..., Process]) -> Callable[..., Process]:
    """Factory: ``start_uvicorn(database_url, workers=1)`` runs the API in uvicorn."""

    def start(database_url: str, *, workers: int = 1) -> Process:
        argv = uvicorn_argv(workers=workers)
        return start_process(argv, env={"AGENTGUARD_DATABASE_URL": database_url})

    return start


@pytest.fixture
def live(start_process: Callable[..., Process], database_url: str) -> Live:
    """A server process on a fresh database, with keys of two organizations."""
    return start_live(start_process, database_url)
