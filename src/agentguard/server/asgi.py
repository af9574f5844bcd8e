"""An app factory for ``uvicorn --factory`` (and so for ``--workers N``), configured by env vars.

``AGENTGUARD_DATABASE_URL`` names the database (default ``sqlite:///agentguard.db``);
``AGENTGUARD_STREAM_KEEPALIVE`` the seconds between the change stream's keep-alives (default 5).
``AGENTGUARD_CLERK_PUBLIC_KEY_FILE`` (a PEM file) with optional comma-separated
``AGENTGUARD_CLERK_AUTHORIZED_PARTIES`` enables Clerk session tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.authentication import AuthenticationBackend
from starlette.types import ASGIApp

from .app import KillSwitchServer
from .clerk import ClerkAuth

DATABASE_URL_ENV = "AGENTGUARD_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///agentguard.db"
KEEPALIVE_ENV = "AGENTGUARD_STREAM_KEEPALIVE"  # seconds between the stream's keep-alive comments


def server_from_env() -> KillSwitchServer:
    """A server configured from the environment."""
    backends: list[AuthenticationBackend] = []
    pem_file = os.environ.get("AGENTGUARD_CLERK_PUBLIC_KEY_FILE")
    if pem_file:
        parties = os.environ.get("AGENTGUARD_CLERK_AUTHORIZED_PARTIES", "")
        backends.append(
            ClerkAuth(
                Path(pem_file).read_text(),
                authorized_parties=[p.strip() for p in parties.split(",") if p.strip()],
            )
        )
    return KillSwitchServer(
        os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL),
        auth=backends,
        keepalive=float(os.environ.get(KEEPALIVE_ENV, "5")),
    )


def create_app() -> ASGIApp:
    """The ASGI app of a server configured from the environment (one per worker process)."""
    return server_from_env().app
