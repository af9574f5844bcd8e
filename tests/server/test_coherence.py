"""Index coherence across processes: a kill through one server is seen by every other's /check."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from agentguard import Guard, PolicyViolationError
from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer

CHECK = {"target_type": "agent", "target_id": "bot"}


def seen_at_once_or_soon(database_url: str, check: Any) -> None:
    """SQLite: the very next /check sees it (data_version probe); PostgreSQL: NOTIFY, polled."""
    if database_url.startswith("sqlite"):
        assert check()
    else:
        eventually(check, timeout=5.0)


def test_two_server_processes_share_kill_state(start_uvicorn: Any, database_url: str) -> None:
    setup = KillSwitchServer(database_url)
    token = setup.create_key("org_a", owner="usr_ops", scopes=["operator"])
    setup.close()
    one, two = start_uvicorn(database_url), start_uvicorn(database_url)
    with httpx.Client(headers=bearer(token), timeout=10.0) as client:

        def killed_on_two() -> bool:
            response = client.get(f"{two.url}/api/v1/kill-switch/check", params=CHECK)
            return bool(response.json()["is_killed"])

        assert not killed_on_two()  # also caches the key in process two: its fast path runs
        assert client.post(f"{one.url}/api/v1/kill-switch/kill", json=CHECK).status_code == 200
        seen_at_once_or_soon(database_url, killed_on_two)
        assert client.post(f"{one.url}/api/v1/kill-switch/revive", json=CHECK).status_code == 200
        seen_at_once_or_soon(database_url, lambda: not killed_on_two())
        # Killed again through process two, seen by process one.
        assert client.post(f"{two.url}/api/v1/kill-switch/kill", json=CHECK).status_code == 200
        seen_at_once_or_soon(
            database_url,
            lambda: client.get(f"{one.url}/api/v1/kill-switch/check", params=CHECK).json()[
                "is_killed"
            ],
        )


def test_a_key_revoked_in_one_process_stops_working_in_another(
    start_uvicorn: Any, database_url: str
) -> None:
    setup = KillSwitchServer(database_url)
    admin = setup.create_key("org_a", owner="usr_admin", scopes=["admin"])
    agent = setup.create_key("org_a", owner="usr_bot", scopes=["agent"], agents=["*"])
    setup.close()
    one, two = start_uvicorn(database_url), start_uvicorn(database_url)
    check = f"{two.url}/api/v1/kill-switch/check"
    assert httpx.get(check, params=CHECK, headers=bearer(agent)).status_code == 200
    key_id = agent.rsplit("_", 1)[0]
    revoked = httpx.delete(f"{one.url}/api/v1/keys/{key_id}", headers=bearer(admin))
    assert revoked.status_code == 200
    seen_at_once_or_soon(
        database_url,
        lambda: httpx.get(check, params=CHECK, headers=bearer(agent)).status_code == 401,
    )


def test_in_process_guard_follows_another_process(make_server: Any, database_url: str) -> None:
    writer = make_server(database_url)  # its own engine: another "process" for the database
    reader = make_server(database_url)
    guard = Guard(reader, organization_id="org_a", agent_id="bot")
    ran: list[int] = []

    @guard.guarded_action
    def tool() -> None:
        ran.append(1)

    tool()
    writer.store.kill("org_a", "agent", "bot", reason="stop", actor="usr_ops")

    def refused() -> bool:
        try:
            tool()
        except PolicyViolationError:
            return True
        return False

    # Nobody asks the reader anything: its poller (SQLite) or listener (PostgreSQL) catches up.
    eventually(refused, timeout=5.0)
    guard.close()


def test_check_through_another_server_object_sees_the_kill_at_once(
    make_server: Any, api: Any, database_url: str
) -> None:
    first = make_server(database_url, poll_interval=3600)  # no help from the poller
    second = make_server(database_url, poll_interval=3600)
    a = api(first)
    b_client = TestClient(second.app, headers=bearer(a.token))
    assert b_client.get("/api/v1/kill-switch/check", params=CHECK).json()["is_killed"] is False
    assert a.kill("agent", "bot").status_code == 200
    seen_at_once_or_soon(
        database_url,
        lambda: b_client.get("/api/v1/kill-switch/check", params=CHECK).json()["is_killed"],
    )


@pytest.mark.postgres
def test_listener_reconnects_and_resyncs(make_postgres_url: Any, make_server: Any) -> None:
    url = make_postgres_url()
    follower = make_server(url)
    writer = make_server(url)
    follower.start()
    writer.start()
    assert follower.index("org_a").get("agent", "bot") is None
    dbname = follower.database.url.database
    admin = psycopg.connect(
        host=follower.database.url.host,
        port=follower.database.url.port,
        user=follower.database.url.username,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        terminated = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE 'LISTEN%%'",
            (dbname,),
        ).fetchall()
        assert terminated, "no listener connection found"
        # Committed while the follower may not be listening: the resync must bring it in.
        writer.store.kill("org_a", "agent", "bot", reason="during outage", actor="usr_ops")
        writer.store.kill("org_a", "run", "r1", reason=None, actor="usr_ops")
    eventually(lambda: follower.feed.reconnects >= 1, timeout=10.0)
    eventually(
        lambda: (
            follower.index("org_a").get("agent", "bot") is not None
            and follower.index("org_a").get("run", "r1") is not None
        ),
        timeout=10.0,
    )
    assert follower.index("org_a").version == 2


def test_listeners_hear_other_processes_changes_of_unread_orgs(
    make_server: Any, database_url: str
) -> None:
    listener_side = make_server(database_url)
    writer = make_server(database_url)
    listener_side.start()
    seen: list[tuple[str, int, str]] = []
    listener_side.store.subscribe(lambda org, c: seen.append((org, c.version, c.kind)))
    writer.store.kill("org_new", "agent", "bot", reason=None, actor="t")
    writer.store.revive("org_new", "agent", "bot", actor="t")
    writer.store.kill("org_other", "tool", "send_email", reason=None, actor="t")
    eventually(lambda: len(seen) == 3, timeout=5.0, message=lambda: seen)
    assert sorted(seen) == [
        ("org_new", 1, "kill"),
        ("org_new", 2, "revive"),
        ("org_other", 1, "kill"),
    ]
    assert [v for org, v, _ in seen if org == "org_new"] == [1, 2]  # in version order
    # Reading the org afterwards loads its index at the current state.
    assert listener_side.index("org_other").get("tool", "send_email") is not None
    assert listener_side.index("org_new").get("agent", "bot") is None
