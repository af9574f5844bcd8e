"""What the server tests share: API clients acting with a key, server processes, polling."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from agentguard.server import KillSwitchServer


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


class Api:
    """A test client of one server acting with one API key."""

    def __init__(
        self,
        server: KillSwitchServer,
        org: str,
        scopes: list[str],
        owner: str,
        agents: list[str] | None = None,
    ) -> None:
        self.server = server
        self.org = org
        self.owner = owner
        if agents is None and "agent" in scopes:
            agents = ["*"]  # an agent key of these tests speaks for any agent unless told
        self.token = server.create_key(org, owner=owner, scopes=scopes, agents=agents)
        self.key_id = self.token.rsplit("_", 1)[0]
        self.client = TestClient(server.app, headers=bearer(self.token))

    @property
    def actor(self) -> str:
        return f"{self.owner} (key {self.key_id})"

    def kill(
        self, target_type: str = "agent", target_id: str = "rogue-bot", **body: Any
    ) -> httpx.Response:
        return self.client.post(
            "/api/v1/kill-switch/kill",
            json={"target_type": target_type, "target_id": target_id, **body},
        )

    def revive(self, target_type: str = "agent", target_id: str = "rogue-bot") -> httpx.Response:
        return self.client.post(
            "/api/v1/kill-switch/revive", json={"target_type": target_type, "target_id": target_id}
        )

    def check(self, target_type: str = "agent", target_id: str = "rogue-bot") -> httpx.Response:
        return self.client.get(
            "/api/v1/kill-switch/check", params={"target_type": target_type, "target_id": target_id}
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server process on loopback."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.popen = popen
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_serving(process: Process, timeout: float = 30.0) -> None:
    """Poll the OpenAPI document until the server answers (or fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            code = process.popen.returncode
            raise AssertionError(f"server exited with {code}:\n{process.output()}")
        try:
            if httpx.get(f"{process.url}/api/v1/openapi.json", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not start within {timeout} s:\n{process.output()}")


def stop(process: Process) -> None:
    """Terminate the process (and its workers), killing it if it lingers."""
    if process.popen.poll() is None:
        process.popen.terminate()
        try:
            process.popen.wait(10)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(5)


def deadline_poll(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
