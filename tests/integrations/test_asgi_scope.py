"""The ASGI gateway enters the caller's scope through the public ``enter_scope``/``exit_scope``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import agentguard
from agentguard import Scope
from agentguard.integrations.asgi import KillSwitchMiddleware

if TYPE_CHECKING:
    from conftest import LiveServer, MakeGuard


def host(guard: agentguard.Guard, ids: dict[str, Scope]) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(agentguard.current_scope()._asdict())

    def identify(scope: object) -> Scope | None:
        headers = dict(scope["headers"])  # type: ignore[index]
        return ids.get(headers.get(b"x-api-key", b"").decode())

    return Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[Middleware(KillSwitchMiddleware, guard=guard, identify=identify)],
    )


def test_ids_from_a_custom_identify_are_validated_before_admission(
    make_guard: MakeGuard, live_server: LiveServer
) -> None:
    guard = make_guard()
    ids = {"good": Scope("bot", "run-1"), "bad": Scope("bot", "  ")}
    with httpx.Client(base_url=f"http://{live_server(host(guard, ids))}", timeout=10) as http:
        allowed = http.get("/whoami", headers={"x-api-key": "good"})
        assert allowed.status_code == 200
        assert allowed.json() == {"agent_id": "bot", "run_id": "run-1", "mission_id": None}

        bad = http.get("/whoami", headers={"x-api-key": "bad"})
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_request" and bad.json()["field"] == "run_id"

        anonymous = http.get("/whoami")  # identify returned None: no scope entered
        assert anonymous.json() == {"agent_id": None, "run_id": None, "mission_id": None}
    assert guard.counts(action="gateway").executed == 2  # the bad request was never admitted
