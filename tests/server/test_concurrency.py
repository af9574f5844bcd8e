"""Races for one target: exactly one kill wins, the database decides, everyone else gets 409."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from agentguard import AlreadyKilledError
from support.api import bearer

RACERS = 24


def race(calls: list[Any]) -> list[Any]:
    """Run the calls at once (released together by a barrier); return results or exceptions."""
    barrier = threading.Barrier(len(calls))

    def run(call: Any) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_store_race_across_two_servers_on_one_database(make_server: Any, database_url: str) -> None:
    # Two servers = two engines and connection pools: only the database can serialise them.
    one, two = make_server(database_url), make_server(database_url)
    one.start()
    two.start()
    stores = [one.store, two.store]
    calls = [
        (
            lambda s=stores[i % 2], i=i: s.kill(
                "org_r", "agent", "bot", reason=f"racer {i}", actor=f"u{i}"
            )
        )
        for i in range(RACERS)
    ]
    results = race(calls)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, AlreadyKilledError)]
    assert len(won) == 1, results
    assert len(lost) == RACERS - 1, results
    winner = won[0].kill_switch
    assert all(e.kill_switch.id == winner.id for e in lost)
    assert one.store.list_active("org_r") == ([winner], 1)
    assert [e.action for e in one.store.list_audit("org_r")[0]] == ["kill"]
    assert one.store.snapshot("org_r").version == 1


def test_http_race_against_real_uvicorn_workers(start_uvicorn: Any, database_url: str) -> None:
    from agentguard.server import KillSwitchServer

    admin = KillSwitchServer(database_url)
    token = admin.create_key("org_r", owner="usr_ops", scopes=["operator"])
    admin.close()
    process = start_uvicorn(database_url, workers=2)
    with httpx.Client(base_url=process.url, headers=bearer(token), timeout=30.0) as client:
        body = {"target_type": "agent", "target_id": "bot"}
        calls = [
            (lambda: client.post("/api/v1/kill-switch/kill", json=body)) for _ in range(RACERS)
        ]
        responses = race(calls)
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [409] * (RACERS - 1), [r.text for r in responses]
        winner = next(r.json() for r in responses if r.status_code == 200)
        assert all(
            r.json()["kill_switch"]["id"] == winner["id"] for r in responses if r.status_code == 409
        )
        active = client.get("/api/v1/kill-switch/active").json()
        assert active["count"] == 1 and active["data"][0]["id"] == winner["id"]
        # And the revive race: one 200, the rest 404.
        revive = [(lambda: client.post("/api/v1/kill-switch/revive", json=body)) for _ in range(8)]
        assert sorted(r.status_code for r in race(revive)) == [200] + [404] * 7
