"""Put the kill switch in front of an agent-facing HTTP API.

A Starlette tool API sits behind `KillSwitchMiddleware`. Agents identify themselves with
`X-Agent-Id` / `X-Run-Id` headers; once an agent is killed its requests get 403 with the
kill's details, while other agents go on. Requests are sent in-process (httpx's ASGI
transport), so nothing touches the network.

    python examples/asgi_gateway.py
"""

from __future__ import annotations

import asyncio
import json

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, current_scope
from agentguard.integrations.asgi import KillSwitchMiddleware

guard = Guard()


async def charge(request: Request) -> JSONResponse:
    # Behind the gateway, agentguard.scope carries the caller's ids to guarded tools.
    return JSONResponse({"charged": True, "agent": current_scope().agent_id})


app = Starlette(
    routes=[Route("/tools/charge", charge, methods=["POST"])],
    middleware=[Middleware(KillSwitchMiddleware, guard=guard)],
)


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:

        async def call(agent: str) -> None:
            headers = {"X-Agent-Id": agent, "X-Run-Id": "run-1"}
            response = await http.post("/tools/charge", headers=headers)
            body = response.json()
            if response.status_code == 403:
                body = {k: body[k] for k in ("target_type", "target_id", "reason", "killed_by")}
            print(f"{agent}: {response.status_code} {json.dumps(body)}")

        await call("billing-bot")
        guard.kill("agent", "billing-bot", reason="Drained $3k in 4 minutes", actor="usr_abc")
        print("operator: killed agent 'billing-bot'")
        await call("billing-bot")
        await call("support-bot")

    blocks = guard.interventions()
    print(f"{len(blocks)} HARD_BLOCK intervention(s), action {blocks[0].action!r}")
    guard.revive("agent", "billing-bot", actor="usr_abc")
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.post("/tools/charge", headers={"X-Agent-Id": "billing-bot"})
        print(f"after revive: billing-bot: {response.status_code}")


asyncio.run(main())
guard.close()
