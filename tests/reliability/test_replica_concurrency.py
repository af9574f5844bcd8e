"""50 concurrent clients toggle kills of overlapping targets through two server replicas on one
PostgreSQL. Afterwards both replicas and every stream client agree on the final state, no target
has two active records, and the audit log holds every successful change exactly once, under
dense, unique versions.

``AGENTGUARD_RELIABILITY_OPS`` sets the toggles per client (10 by default).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from agentguard import Guard
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import kill_switches
from support import eventually
from support.api import bearer
from support.reliability import OPS_PER_CLIENT, Uvicorn, keys_for

CLIENTS = 50
TARGETS = [
    *(("agent", f"bot-{i}") for i in range(4)),
    ("run", "run-1"),
    ("tool", "send_email"),
]
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def make_guard() -> Iterator[Callable[..., Guard]]:
    guards: list[Guard] = []

    def make(url: str, key: str) -> Guard:
        guard = Guard(url, api_key=key, max_staleness=60)
        guards.append(guard)
        return guard

    yield make
    for guard in guards:
        guard.close()


def toggle(url: str, key: str, seed: int, barrier: threading.Barrier) -> list[dict[str, Any]]:
    """One client: OPS_PER_CLIENT random kills and revives; every answer noted."""
    rng = random.Random(seed)
    done = []
    with httpx.Client(base_url=url, headers=bearer(key), timeout=60.0) as client:
        barrier.wait()
        for n in range(OPS_PER_CLIENT):
            target_type, target_id = rng.choice(TARGETS)
            kind = rng.choice(("kill", "revive"))
            body: dict[str, Any] = {"target_type": target_type, "target_id": target_id}
            if kind == "kill":
                body["reason"] = f"client {seed} op {n}"
            response = client.post(f"/api/v1/kill-switch/{kind}", json=body)
            done.append(
                {
                    "kind": kind,
                    "target": (target_type, target_id),
                    "status": response.status_code,
                    "version": response.headers.get("x-agentguard-version"),
                    "record": response.json(),
                    "client": seed,
                }
            )
    return done


def every(client: httpx.Client, action: str) -> list[dict[str, Any]]:
    """Every audit entry of one action, page by page."""
    entries: list[dict[str, Any]] = []
    while True:
        params = {"action": action, "skip": len(entries), "limit": 1000}
        page = client.get("/api/v1/audit", params=params).json()
        entries += page["data"]
        if not page["data"] or len(entries) >= page["count"]:
            return entries


def test_fifty_clients_through_two_replicas(
    make_postgres_url: Callable[[], str],
    start_uvicorn: Callable[..., Uvicorn],
    make_guard: Callable[..., Guard],
) -> None:
    url = make_postgres_url()
    keys = keys_for(url, "org_race", operator=["operator"], agent=["agent"])
    replicas = [start_uvicorn(url), start_uvicorn(url)]
    guards = [make_guard(r.url, keys["agent"]) for r in replicas for _ in range(2)]
    assert all(g.wait_until_synced(10) for g in guards)

    barrier = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(toggle, replicas[i % 2].url, keys["operator"], i, barrier)
            for i in range(CLIENTS)
        ]
        answers = [a for f in futures for a in f.result()]

    # Every answer is one of the documented ones, and the conflicts say so.
    by_status: dict[int, int] = {}
    for a in answers:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
        expected = {"kill": (200, 409), "revive": (200, 404)}[a["kind"]]
        assert a["status"] in expected, a
    changes = [a for a in answers if a["status"] == 200]
    assert len(changes) >= len(TARGETS), by_status  # real contention, not a quiet run

    # Each successful change has its own version; together they are 1..n without a gap.
    versions = sorted(int(a["version"]) for a in changes)
    assert versions == list(range(1, len(changes) + 1))

    # The audit log: each change exactly once, under its version, with its action and target.
    with httpx.Client(base_url=replicas[0].url, headers=bearer(keys["operator"])) as client:
        entries = [e for action in ("kill", "revive") for e in every(client, action)]
    assert len(entries) == len(changes)
    logged = {e["version"]: (e["action"], e["target_type"], e["target_id"]) for e in entries}
    assert len(logged) == len(changes)
    for a in changes:
        assert logged[int(a["version"])] == (a["kind"], *a["target"]), a

    # Replaying the log in version order gives the final state; kills and revives alternate.
    state: dict[tuple[str, str], str] = {}
    for version in sorted(logged):
        action, *target = logged[version]
        key = (target[0], target[1])
        previous = state.get(key, "revive")
        assert previous != action, f"version {version}: {action} of {key} after a {previous}"
        state[key] = action
    killed = {key for key, action in state.items() if action == "kill"}
    records = {
        int(a["version"]): a["record"]["id"] for a in changes if a["kind"] == "kill"
    }  # the id of each kill, by version
    final_ids = {
        key: records[max(v for v, entry in logged.items() if entry == ("kill", *key))]
        for key in killed
    }

    # Both replicas answer the same final state, in /active and /check.
    for replica in replicas:
        with httpx.Client(base_url=replica.url, headers=bearer(keys["operator"])) as client:
            active = client.get("/api/v1/kill-switch/active", params={"limit": 1000}).json()
            found = {(ks["target_type"], ks["target_id"]): ks["id"] for ks in active["data"]}
            assert found == final_ids, replica.url
            for target_type, target_id in TARGETS:
                check = client.get(
                    "/api/v1/kill-switch/check",
                    params={"target_type": target_type, "target_id": target_id},
                ).json()
                assert check["is_killed"] == ((target_type, target_id) in killed)

    # Every stream client, on either replica, reaches the final version and state.
    final_version = len(changes)
    for guard in guards:
        eventually(lambda g=guard: g.version == final_version, 10, message=repr(guard))
        assert {(ks.target_type, ks.target_id): ks.id for ks in guard.active()} == final_ids

    # And the database itself never holds two active records for one target.
    server = KillSwitchServer(url)
    try:
        t = kill_switches.c
        with server.database.read() as conn:
            doubles = conn.execute(
                select(t.target_type, t.target_id, func.count())
                .where(t.is_active)
                .group_by(t.organization_id, t.target_type, t.target_id)
                .having(func.count() > 1)
            ).all()
    finally:
        server.close()
    assert doubles == []
