"""Revocation is final everywhere at once: once ``DELETE /api/v1/keys/{id}`` has answered 200,
no worker of any replica accepts the key, even when the key's first use in a process overlaps
the revocation (the use then must not put the key back into that process's cache).

Two uvicorn replicas with two workers each on one PostgreSQL (and, for SQLite, on one database
file: four processes on one machine), over loopback. Each round makes
a fresh key and starts many concurrent users of it on both replicas while an admin revokes it;
every request sent after the 200 arrived must be refused (401), and so must a sweep of new
connections to every replica afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.live import uvicorn_argv
from support.processes import Process, free_port, stop, wait_until_serving

pytestmark = pytest.mark.slow

ATTEMPTS = 30  # keys, each raced against its revocation in turn
USERS = 8  # concurrent first users of each key, half on each replica
AFTER = 2  # requests each user sends after the revocation's 200 arrived
SWEEP = 8  # fresh connections per replica after each attempt


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[Process]]]:
    """Two replicas of two uvicorn workers each on one fresh database."""
    if request.param == "postgres":
        make_postgres_url: Callable[[], str] = request.getfixturevalue("make_postgres_url")
        url = make_postgres_url()
    else:
        url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    KillSwitchServer(url).close()  # migrate once, before four workers start at the same time
    started: list[Process] = []
    try:
        for _ in range(2):
            port = free_port()
            log = tmp_path / f"uvicorn-{port}.log"
            popen = subprocess.Popen(
                [a.replace("{port}", str(port)) for a in uvicorn_argv(workers=2)],
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                env={**os.environ, "AGENTGUARD_DATABASE_URL": url},
                start_new_session=True,
            )
            process = Process(popen, port, log)
            started.append(process)
            wait_until_serving(process)
        yield url, started
    finally:
        for process in started:
            stop(process)


def _make_keys(url: str, count: int) -> tuple[str, list[str]]:
    server = KillSwitchServer(url)
    try:
        admin = server.create_key("org_a", owner="usr_admin", scopes=["admin"])
        users = [
            server.create_key("org_a", owner=f"usr_{i}", scopes=["operator"]) for i in range(count)
        ]
    finally:
        server.close()
    return admin, users


CHECK = ("/api/v1/kill-switch/check", {"target_type": "agent", "target_id": "bot"})
ACTIVE: tuple[str, dict[str, str]] = ("/api/v1/kill-switch/active", {})


async def _race(
    client: httpx.AsyncClient, urls: list[str], admin: str, token: str
) -> tuple[list[str], int]:
    """Race first uses of ``token`` against its revocation, then try it some more: what was
    accepted after the 200, and how many requests were sent after it. Every request opens a
    new connection, so it may land on either worker of its replica."""
    key_id = token.rsplit("_", 1)[0]
    revoked_at: list[float] = []
    late: list[str] = []
    sent_after = 0

    async def use(url: str, n: int) -> None:
        nonlocal sent_after
        after = 0
        # Half the users go through the full app (a list), the other half through /check.
        path, params = CHECK if n % 2 else ACTIVE
        await asyncio.sleep(random.uniform(0.0, 0.03))
        while after < AFTER:
            sent = time.monotonic()
            response = await client.get(url + path, params=params, headers=bearer(token))
            assert response.status_code in (200, 401), response.text
            if revoked_at and sent > revoked_at[0]:
                after += 1
                sent_after += 1
                if response.status_code == 200:
                    delay = (time.monotonic() - revoked_at[0]) * 1000
                    late.append(f"{path} on {url} {delay:.1f} ms after the 200")

    async def revoke() -> None:
        await asyncio.sleep(random.uniform(0.0, 0.03))
        url = random.choice(urls)
        response = await client.delete(f"{url}/api/v1/keys/{key_id}", headers=bearer(admin))
        assert response.status_code == 200, response.text
        revoked_at.append(time.monotonic())

    await asyncio.gather(revoke(), *(use(urls[i % 2], i) for i in range(USERS)))
    # Fresh connections reach every worker of each replica, in all likelihood.
    for url in urls:
        for _ in range(SWEEP):
            path, params = CHECK
            response = await client.get(url + path, params=params, headers=bearer(token))
            sent_after += 1
            if response.status_code != 401:
                late.append(f"a fresh connection to {url}: {response.status_code}")
    return late, sent_after


async def _attempts(urls: list[str], admin: str, tokens: list[str]) -> tuple[list[str], int]:
    late: list[str] = []
    total_after = 0
    fresh = httpx.Limits(max_connections=USERS + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=fresh) as client:
        for n, token in enumerate(tokens):
            accepted, sent_after = await _race(client, urls, admin, token)
            total_after += sent_after
            late += [f"key {n}: {line}" for line in accepted]
    return late, total_after


@pytest.mark.timeout(600)
def test_no_replica_or_worker_accepts_a_key_after_its_revocation(
    replicas: tuple[str, list[Process]],
) -> None:
    database_url, processes = replicas
    admin, tokens = _make_keys(database_url, ATTEMPTS)
    late, total_after = asyncio.run(_attempts([p.url for p in processes], admin, tokens))
    assert total_after >= ATTEMPTS * (USERS * AFTER + 2 * SWEEP)
    assert not late, f"{len(late)} requests accepted after the revocation:\n" + "\n".join(late)
