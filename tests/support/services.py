"""Gates for the services a test needs: PostgreSQL, its binaries, Chromium.

A missing service skips the test with a reason, unless ``AGENTGUARD_REQUIRE_POSTGRES=1`` or
``AGENTGUARD_REQUIRE_BROWSER=1`` (set by CI) turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from support.pg_cluster import find_bindir

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
