"""API clients of an in-process server, each acting with one API key."""

from __future__ import annotations

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

    def revive(
        self, target_type: str = "agent", target_id: str = "rogue-bot", **body: Any
    ) -> httpx.Response:
        return self.client.post(
            "/api/v1/kill-switch/revive",
            json={"target_type": target_type, "target_id": target_id, **body},
        )

    def approve(self, request_id: str, **body: Any) -> httpx.Response:
        return self.client.post(
            f"/api/v1/kill-switch/revive-requests/{request_id}/approve", json=body
        )

    def reject(self, request_id: str, **body: Any) -> httpx.Response:
        return self.client.post(
            f"/api/v1/kill-switch/revive-requests/{request_id}/reject", json=body
        )

    def check(self, target_type: str = "agent", target_id: str = "rogue-bot") -> httpx.Response:
        return self.client.get(
            "/api/v1/kill-switch/check", params={"target_type": target_type, "target_id": target_id}
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)
