"""What the reliability tests share: bounded sizes, uvicorn processes that can be crashed and
restarted on the same port, and API keys made straight on a database.

Sizes (the CI default; the full run's, as ``make bench`` should set them):

- ``AGENTGUARD_RELIABILITY_TOGGLES``: kill/revive cycles of the crash-and-restart runs (30; 100)
- ``AGENTGUARD_RELIABILITY_OPS``: toggles per client of the 50-client run (10; 40)
- ``AGENTGUARD_STATE_EXAMPLES``: examples of the model-based state test (25; 100)
- ``AGENTGUARD_FUZZ_EXAMPLES``: examples per operation and mode of the live fuzzing (10; 40)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agentguard.server import KillSwitchServer
from support.live import uvicorn_argv
from support.processes import Process, free_port, stop, wait_until_serving


def size(name: str, default: int) -> int:
    """A bounded size, overridable from the environment."""
    return int(os.environ.get(name, default))


TOGGLES = size("AGENTGUARD_RELIABILITY_TOGGLES", 30)
OPS_PER_CLIENT = size("AGENTGUARD_RELIABILITY_OPS", 10)
FUZZ_EXAMPLES = size("AGENTGUARD_FUZZ_EXAMPLES", 10)
STATE_EXAMPLES = size("AGENTGUARD_STATE_EXAMPLES", 25)


class Uvicorn:
    """A uvicorn process serving the API on a fixed loopback port; it can be crashed and
    restarted on the same port and database. Its whole output goes to one log file."""

    def __init__(self, database_url: str, log_dir: Path, *, keepalive: float, log_level: str):
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"uvicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "AGENTGUARD_DATABASE_URL": database_url,
            "AGENTGUARD_STREAM_KEEPALIVE": str(keepalive),
        }
        self.argv = [a.replace("{port}", str(self.port)) for a in uvicorn_argv()]
        self.argv[self.argv.index("--log-level") + 1] = log_level
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        popen = subprocess.Popen(
            self.argv,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.process = Process(popen, self.port, self.log)
        wait_until_serving(self.process)

    def crash(self) -> None:
        """SIGKILL: no shutdown, no flush, connections dropped mid-stream."""
        assert self.process is not None
        os.killpg(self.process.popen.pid, signal.SIGKILL)
        self.process.popen.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Serve(Uvicorn):
    """``agentguard serve OPTIONS`` (the command operators run) on a fixed loopback port, on
    a database that already has keys; it can be crashed and restarted like :class:`Uvicorn`."""

    def __init__(self, database_url: str, log_dir: Path, *options: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"serve-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
        self.argv = [
            sys.executable, "-m", "agentguard.cli", "serve", "--database-url", database_url,
            "--port", str(self.port), "--log-level", "warning", *options,
        ]  # fmt: skip
        self.process = None
        self.start()


def keys_for(database_url: str, org: str, **scopes: list[str]) -> dict[str, str]:
    """API keys of one organization, by name: ``keys_for(url, "org_a", admin=["admin"])``.

    Agent keys speak for any agent (``*``).
    """
    server = KillSwitchServer(database_url)
    try:
        return {
            name: server.create_key(
                org,
                owner=f"usr_{name}",
                scopes=granted,
                agents=["*"] if "agent" in granted else None,
            )
            for name, granted in scopes.items()
        }
    finally:
        server.close()
