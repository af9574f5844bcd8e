"""Shared fixtures: real PostgreSQL databases made and dropped per test, and server processes
(for the server's tests and the remote source's).

PostgreSQL tests skip with a reason when no server answers, unless
``AGENTGUARD_REQUIRE_POSTGRES=1`` (set by CI), which turns the skip into a failure (see
support/services.py; the same holds for Chromium and ``AGENTGUARD_REQUIRE_BROWSER=1``).

Tests that stop or restart PostgreSQL use ``private_postgres``, a cluster of their own (see
support/pg_cluster.py), never the shared one: restarting that broke concurrent runs and its other
users. Server modules are imported inside the fixtures: the core tests never import the server.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agentguard import KillStore, MemoryStore
from support.pg_cluster import PrivateCluster
from support.services import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    POSTGRES_USER,
    require_postgres,
    require_postgres_binaries,
)

if TYPE_CHECKING:
    from agentguard.server import KillSwitchServer
    from support.live import Live
    from support.processes import Process


def _admin_url(database: str = "postgres") -> str:
    return f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


@pytest.fixture
def make_server() -> Iterator[Callable[..., KillSwitchServer]]:
    """Factory: ``make_server(url, **options)``; every server is closed after the test."""
    from agentguard.server import KillSwitchServer  # not imported by the core tests

    servers: list[KillSwitchServer] = []

    def make(database_url: str | None = None, **options: Any) -> KillSwitchServer:
        server = KillSwitchServer(database_url, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


class _Dropper:
    """Drops the tests' PostgreSQL databases on a thread of its own, several at once.

    Each ``DROP DATABASE`` waits for a checkpoint (half a second to two on a busy disk); done in
    each test's teardown, that was minutes of a run. Here the next test starts at once, and the
    drops waiting together share their checkpoints. The session ends only after every database
    is dropped (a failed drop fails the session's teardown, as it failed the test's before).
    """

    BATCH = 8  # drops at once, each on a connection of its own

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
        self._thread.start()

    def drop(self, names: list[str]) -> None:
        for name in names:
            self._names.put(name)

    def _run(self) -> None:
        with ThreadPoolExecutor(self.BATCH, thread_name_prefix="drop-database") as pool:
            done = False
            while not done:
                batch = [self._names.get()]
                while len(batch) < self.BATCH and not self._names.empty():
                    batch.append(self._names.get())
                done = None in batch
                list(pool.map(self._drop, [name for name in batch if name is not None]))

    def _drop(self, name: str) -> None:
        try:
            with _admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # reported when the session ends
            self.errors.append(f"{name}: {exc!r}")

    def finish(self) -> None:
        self._names.put(None)
        self._thread.join()
        assert not self.errors, "test databases not dropped:\n" + "\n".join(self.errors)


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture(scope="session")
def _database_dropper() -> Iterator[_Dropper]:
    dropper = _Dropper()
    yield dropper
    dropper.finish()


@pytest.fixture
def make_postgres_url(_database_dropper: _Dropper) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh, empty PostgreSQL database and returns its URL.

    The databases are dropped after the test, in the background (see ``_Dropper``).
    """
    require_postgres()
    created: list[str] = []

    def make() -> str:
        name = f"agentguard_test_{uuid.uuid4().hex[:12]}"
        with _admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _admin_url(name)

    yield make
    _database_dropper.drop(created)


@pytest.fixture(scope="session")
def _private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(require_postgres_binaries())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def private_postgres(_private_cluster: PrivateCluster) -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this test run alone, which the test may stop and restart.

    One per session (initdb takes a second or two), running when each test starts and left
    running after it; ``create_database()`` gives a fresh database on it.
    """
    if not _private_cluster.running:
        _private_cluster.start()
    yield _private_cluster
    if not _private_cluster.running:
        _private_cluster.start()


SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _fresh_database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'agentguard.db')}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_url")
    return make()


@pytest.fixture(params=SQL_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A fresh database URL, once for SQLite (a file) and once for PostgreSQL."""
    return _fresh_database_url(request, tmp_path)


@pytest.fixture(params=["memory", *SQL_BACKENDS])
def kill_store(
    request: pytest.FixtureRequest,
    tmp_path: os.PathLike[str],
    make_server: Callable[..., KillSwitchServer],
) -> KillStore:
    """Each KillStore, for its one contract suite: MemoryStore, then the server's store on a fresh
    SQLite file and on a fresh PostgreSQL database (the server is started, as in production)."""
    if request.param == "memory":
        return MemoryStore()
    server = make_server(_fresh_database_url(request, tmp_path))
    server.start()
    store: KillStore = server.store
    return store


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory: run ``argv`` (a server) with env vars on a free port; stopped in teardown."""
    from support.processes import Process, free_port, stop, wait_until_serving

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
def live(start_process: Callable[..., Process], database_url: str) -> Live:
    """A server process on a fresh database, with keys of two organizations."""
    from support.live import start_live

    return start_live(start_process, database_url)
