"""A private PostgreSQL cluster for tests that stop or restart PostgreSQL.

``initdb`` in a temporary directory, trust auth, its own free port on 127.0.0.1, its socket in
its own directory: stopping it touches nobody else (the machine's shared cluster, concurrent
test runs). PostgreSQL refuses to run as root, so as root the cluster is made and run as the
``postgres`` user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from support.processes import free_port

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: AGENTGUARD_TEST_PG_BINDIR, the newest
    /usr/lib/postgresql/*/bin (Debian), or the PATH."""
    given = os.environ.get("AGENTGUARD_TEST_PG_BINDIR")
    candidates = [given] if given else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


class PrivateCluster:
    """One initdb'd cluster: ``start``, ``stop``, ``restart``, ``create_database``, ``remove``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="agentguard-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.port = free_port()
        self.user = SERVER_USER if self.as_root else _current_user()
        if self.as_root:
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.directory
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )
        return result.stdout

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop it (fast shutdown: every connection is dropped, as in a failover)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop and start it: every connection drops."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"agentguard_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop it if it runs and delete its directory."""
        try:
            if self.running:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()
