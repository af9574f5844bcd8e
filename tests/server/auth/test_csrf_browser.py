"""Cross-site request forgery in a real headless Chromium, against a real uvicorn server.

A page on another port of the same host (same-site, so even a SameSite=Strict cookie goes
along) auto-submits a ``text/plain`` form whose body is a kill request, to a victim signed in
with a Clerk ``__session`` cookie. The kill must not happen; the same cookie used by a page of
the server's own origin still works.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import Browser

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import Process, free_port, stop, wait_until_serving

pytestmark = pytest.mark.browser

KILL = "/api/v1/kill-switch/kill"


@dataclass
class Victim:
    """The server, a Clerk session token of org_v, and an API key of org_v to look with."""

    url: str
    session: str
    key: str

    def killed(self, target_id: str) -> bool:
        response = httpx.get(
            f"{self.url}/api/v1/kill-switch/check",
            params={"target_type": "agent", "target_id": target_id},
            headers=bearer(self.key),
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["is_killed"])


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    directory = tmp_path_factory.mktemp("csrf")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / "clerk.pem").write_bytes(pem)
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    admin = KillSwitchServer(database_url)
    key = admin.create_key("org_v", owner="usr_look", scopes=["read"])
    admin.close()
    now = int(time.time())
    claims = {"sub": "user_victim", "org_id": "org_v", "org_role": "org:admin"}
    session = jwt.encode(
        {**claims, "iat": now - 5, "nbf": now - 5, "exp": now + 3600}, private, algorithm="RS256"
    )
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "agentguard.server.asgi:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "AGENTGUARD_DATABASE_URL": database_url,
        "AGENTGUARD_CLERK_PUBLIC_KEY_FILE": str(directory / "clerk.pem"),
    }
    log = directory / "server.log"
    popen = subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    process = Process(popen, port, log)
    try:
        wait_until_serving(process)
        yield Victim(process.url, session, key)
    finally:
        stop(process)


def attack_page(action: str, target_id: str) -> bytes:
    """An auto-submitting text/plain form whose body reads as a kill request in JSON.

    A text/plain form sends ``name=value``; the ``=`` lands inside the reason string.
    """
    body = {"target_type": "agent", "target_id": target_id, "reason": "x"}
    name = json.dumps(body)[: -len('"}')]  # ... "reason": "x   (the value closes it)
    return f"""<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{html.escape(action)}">
<input type="hidden" name="{html.escape(name)}" value='"}}'>
</form>
<script>document.getElementById("f").submit();</script>
</body></html>""".encode()


@pytest.fixture(scope="module")
def attacker() -> Iterator[tuple[str, dict[str, bytes]]]:
    """Another origin on the same host: serves whatever page is put in its dict."""
    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            page = pages.get(self.path)
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(page or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_same_site_text_plain_form_cannot_kill_with_the_clerk_cookie(
    chromium: Browser, victim: Victim, attacker: tuple[str, dict[str, bytes]]
) -> None:
    attacker_url, pages = attacker
    pages["/attack"] = attack_page(f"{victim.url}{KILL}", "csrf-target")
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    try:
        # The victim is signed in with Clerk: its cookie is host-wide, every port gets it.
        context.add_cookies(
            [{"name": "__session", "value": victim.session, "url": victim.url, "sameSite": "Lax"}]
        )
        page = context.new_page()
        with page.expect_response(lambda r: r.url == f"{victim.url}{KILL}") as answer:
            page.goto(f"{attacker_url}/attack")
        assert answer.value.request.method == "POST"
        assert answer.value.request.headers.get("content-type") == "text/plain"
        assert answer.value.status in (403, 415), answer.value.text()
        assert not victim.killed("csrf-target")

        # The same cookie from the server's own origin (the console's page) still kills.
        page.goto(f"{victim.url}/kill-switch")
        status = page.evaluate(
            """async (path) => (await fetch(path, {
                method: "POST",
                credentials: "same-origin",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({target_type: "agent", target_id: "own-origin"}),
            })).status""",
            KILL,
        )
        assert status == 200
        assert victim.killed("own-origin")
    finally:
        context.close()
