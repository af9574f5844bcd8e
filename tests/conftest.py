"""Shared fixtures: real PostgreSQL databases made and dropped per test, and service gates.

PostgreSQL tests skip with a reason when no server answers, unless
``AGENTGUARD_REQUIRE_POSTGRES=1`` (set by CI), which turns the skip into a failure.
The same holds for Chromium and ``AGENTGUARD_REQUIRE_BROWSER=1``.

Tests that stop or restart PostgreSQL use ``private_postgres``, a cluster of their own (see
pg_cluster.py), never the shared one: restarting that broke concurrent runs and its other users.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.pg_cluster import PrivateCluster, find_bindir

if TYPE_CHECKING:
    from agentguard.server import KillSwitchServer

POSTGRES_HOST = os.environ.get("AGENTGUARD_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("AGENTGUARD_TEST_PG_PORT", "5432"))
POSTGRES_USER = os.environ.get("AGENTGUARD_TEST_PG_USER", "postgres")
CHROMIUM = os.environ.get("AGENTGUARD_CHROMIUM", "/usr/bin/chromium")


def _required(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip the test when PostgreSQL is missing, or fail if it is required."""
    if _port_open(POSTGRES_HOST, POSTGRES_PORT):
        return
    message = f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}"
    if _required("AGENTGUARD_REQUIRE_POSTGRES"):
        pytest.fail(f"{message} and AGENTGUARD_REQUIRE_POSTGRES is set")
    pytest.skip(f"{message} (set AGENTGUARD_TEST_PG_HOST/PORT to point at one)")


def require_postgres_binaries() -> Path:
    """The directory of initdb and pg_ctl; skip when missing, or fail if PostgreSQL is required."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    message = (
        "PostgreSQL's initdb and pg_ctl were not found (in AGENTGUARD_TEST_PG_BINDIR, "
        "/usr/lib/postgresql/*/bin or the PATH), so no private cluster can be made"
    )
    if _required("AGENTGUARD_REQUIRE_POSTGRES"):
        pytest.fail(f"{message} and AGENTGUARD_REQUIRE_POSTGRES is set")
    pytest.skip(f"{message} (apt-get install postgresql)")


def require_browser() -> str:
    """Return Chromium's path; skip when missing, or fail if it is required."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    message = f"Chromium not found at {CHROMIUM}"
    if _required("AGENTGUARD_REQUIRE_BROWSER"):
        pytest.fail(f"{message} and AGENTGUARD_REQUIRE_BROWSER is set")
    pytest.skip(f"{message} (apt-get install chromium)")


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


@pytest.fixture
def make_postgres_url() -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh, empty PostgreSQL database and returns its URL."""
    require_postgres()
    import psycopg

    created: list[str] = []

    def make() -> str:
        name = f"agentguard_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _admin_url(name)

    yield make
    with psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, dbname="postgres",
        autocommit=True,
    ) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A fresh database URL, once for SQLite (a file) and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'agentguard.db')}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_url")
    return make()
