"""A real server process with keys of two organizations, for stream and remote-guard tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import httpx

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import Process


def uvicorn_argv(*, workers: int = 1) -> list[str]:
    """uvicorn serving the API from ``AGENTGUARD_DATABASE_URL``; ``{port}`` is filled in later."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "agentguard.server.asgi:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]


def start_live(
    start_process: Callable[..., Process],
    database_url: str,
    *,
    port: int | None = None,
    keys: bool = True,
    keepalive: float = 0.3,
) -> Live:
    """Start a server process on ``database_url`` (keep-alive every ``keepalive`` s)."""
    env = {"AGENTGUARD_DATABASE_URL": database_url, "AGENTGUARD_STREAM_KEEPALIVE": str(keepalive)}
    return Live(start_process(uvicorn_argv(), env=env, port=port), database_url, keys=keys)


class Live:
    """A server process on a database, with keys of two organizations."""

    def __init__(self, process: Process, database_url: str, *, keys: bool = True) -> None:
        self.process = process
        self.url = process.url
        self.database_url = database_url
        if not keys:
            return
        keys_server = KillSwitchServer(database_url)
        try:
            self.admin = keys_server.create_key("org_a", owner="usr_ops", scopes=["admin"])
            self.agent = keys_server.create_key(
                "org_a", owner="bot", scopes=["agent"], agents=["*"]
            )
            self.other = keys_server.create_key("org_b", owner="usr_b", scopes=["admin"])
        finally:
            keys_server.close()

    def with_keys_of(self, other: Live) -> Live:
        """Use another replica's keys (same database)."""
        self.admin, self.agent, self.other = other.admin, other.agent, other.other
        return self

    def post(self, path: str, key: str | None = None, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1{path}", json=body, headers=bearer(key or self.admin))

    def kill(
        self, target_id: str, key: str | None = None, target_type: str = "agent"
    ) -> httpx.Response:
        return self.post("/kill-switch/kill", key, target_type=target_type, target_id=target_id)

    def revive(self, target_id: str, target_type: str = "agent") -> httpx.Response:
        return self.post("/kill-switch/revive", target_type=target_type, target_id=target_id)
