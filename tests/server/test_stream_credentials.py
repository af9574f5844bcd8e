"""An open change stream ends when its credential ends: a console sign-out (on any replica), a
console cookie's or a Clerk token's expiry. Key revocation: tests/server/test_stream.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agentguard.server import KillSwitchServer
from agentguard.server.auth.clerk import ClerkAuth
from support.api import bearer
from support.live import Live, uvicorn_argv
from support.processes import Process
from support.stream_client import StreamReader, ThreadServer

SESSION = "/kill-switch/session"


@pytest.fixture
def readers() -> Iterator[Callable[..., StreamReader]]:
    made: list[StreamReader] = []

    def make(url: str, **options: Any) -> StreamReader:
        reader = StreamReader(url, **options)
        made.append(reader)
        return reader

    yield make
    for reader in made:
        reader.close()


def sign_in(url: str, key: str) -> tuple[dict[str, str], str]:
    """A console session of ``key``: its cookies and CSRF token."""
    response = httpx.post(url + SESSION, json={"api_key": key})
    assert response.status_code == 200, response.text
    return dict(response.cookies), response.json()["csrf_token"]


def sign_out(url: str, cookies: dict[str, str], csrf: str) -> None:
    with httpx.Client(cookies=cookies) as client:
        response = client.delete(url + SESSION, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204, response.text


def kill(url: str, key: str, target_id: str) -> None:
    response = httpx.post(
        f"{url}/api/v1/kill-switch/kill",
        json={"target_type": "agent", "target_id": target_id},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text


def test_signing_out_ends_the_sessions_open_stream(
    live: Live, readers: Callable[..., StreamReader]
) -> None:
    cookies, csrf = sign_in(live.url, live.admin)
    doomed = readers(live.url, cookies=cookies)
    other_cookies, _ = sign_in(live.url, live.admin)  # another session of the same key
    kept = readers(live.url, cookies=other_cookies)
    for reader in (doomed, kept):
        assert reader.status == 200
        reader.wait_for(lambda e: e[:1] and e[0][0] == "snapshot")
    sign_out(live.url, cookies, csrf)
    assert doomed.ended.wait(5), "the stream outlived its console session's sign-out"
    assert doomed.error is None, doomed.error  # closed by the server, not broken
    kill(live.url, live.admin, "after-sign-out")
    kept.wait_for(lambda e: "kill" in [k for k, _, _ in e])  # the other session still streams
    assert "kill" not in doomed.kinds()
    again = httpx.get(live.url + "/api/v1/kill-switch/stream", cookies=cookies)
    assert again.status_code == 401


def test_a_sign_out_on_another_replica_ends_the_stream(
    start_process: Callable[..., Process],
    database_url: str,
    readers: Callable[..., StreamReader],
) -> None:
    env = {
        "AGENTGUARD_DATABASE_URL": database_url,
        "AGENTGUARD_STREAM_KEEPALIVE": "0.3",
        "AGENTGUARD_SESSION_SECRET": "shared-by-both-replicas",
    }
    first = Live(start_process(uvicorn_argv(), env=env), database_url)
    second = Live(start_process(uvicorn_argv(), env=env), database_url, keys=False)
    cookies, csrf = sign_in(first.url, first.admin)
    streamed = readers(first.url, cookies=cookies)
    streamed.wait_for(lambda e: len(e) >= 1)
    sign_out(second.url, cookies, csrf)  # through the other process
    assert streamed.ended.wait(5), "the stream outlived a sign-out on another replica"
    assert streamed.error is None, streamed.error


@pytest.fixture
def thread_server(make_server: Callable[..., KillSwitchServer]) -> Iterator[Callable[..., Any]]:
    """Factory: ``thread_server(**options)`` -> (KillSwitchServer, ThreadServer)."""
    running: list[ThreadServer] = []

    def make(**options: Any) -> tuple[KillSwitchServer, ThreadServer]:
        server = make_server(None, keepalive=0.3, **options)
        server.start()
        served = ThreadServer(server)
        running.append(served)
        return server, served

    yield make
    for served in running:
        served.close()


def test_a_console_session_stream_ends_when_the_session_expires(
    thread_server: Callable[..., Any], readers: Callable[..., StreamReader]
) -> None:
    server, served = thread_server()
    server.sessions.max_age = 2  # seconds
    key = server.create_key("org_a", owner="usr_ops", scopes=["admin"])
    cookies, _ = sign_in(served.url, key)
    expiring = readers(served.url, cookies=cookies)
    keyed = readers(served.url, headers=bearer(key))  # the same key, no expiry
    expiring.wait_for(lambda e: len(e) >= 1)
    assert expiring.ended.wait(2 + 1 + 2), "the stream outlived its console session"
    assert expiring.error is None, expiring.error
    kill(served.url, key, "after-expiry")
    keyed.wait_for(lambda e: "kill" in [k for k, _, _ in e])
    assert "kill" not in expiring.kinds()


@pytest.fixture(scope="module")
def signing_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def clerk_token(signing_key: Any, lifetime: float) -> str:
    now = int(time.time())
    claims = {"sub": "user_1", "o": {"id": "org_a", "rol": "admin"}, "iat": now - 1}
    return jwt.encode({**claims, "exp": now + lifetime}, signing_key, algorithm="RS256")


def test_a_clerk_token_stream_ends_when_the_token_expires(
    thread_server: Callable[..., Any], readers: Callable[..., StreamReader], signing_key: Any
) -> None:
    pem = (
        signing_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    server, served = thread_server(auth=ClerkAuth(pem, leeway=0.0))
    short = readers(served.url, headers=bearer(clerk_token(signing_key, 2)))
    long = readers(served.url, headers=bearer(clerk_token(signing_key, 3600)))
    for reader in (short, long):
        assert reader.status == 200, reader.body
        reader.wait_for(lambda e: len(e) >= 1)
    assert short.ended.wait(2 + 1 + 2), "the stream outlived its session token"
    assert short.error is None, short.error
    key = server.create_key("org_a", owner="usr_ops", scopes=["admin"])
    kill(served.url, key, "after-expiry")
    long.wait_for(lambda e: "kill" in [k for k, _, _ in e])
    assert "kill" not in short.kinds() and not long.ended.is_set()
