"""PostgreSQL stopped under a running server (a private cluster: never the shared one).

While the database is away the server answers 503 problem JSON with ``Retry-After`` (logged
once, no traceback), ``/check`` and the change stream keep serving from the index, client and
CLI say that the server's database is unavailable, and a checkpoint waits the outage out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from agentguard import Guard
from agentguard.client import Client, DatabaseUnavailableError, StreamEvent
from support import eventually
from support.api import bearer
from support.cli import run as run_cli
from support.live import Live, start_live
from support.pg_cluster import PrivateCluster
from support.processes import Process

UNAVAILABLE = "the server's database is unavailable"


def follow(url: str, key: str) -> tuple[queue.Queue[StreamEvent | Exception], Client]:
    """Read the change stream in a thread; its events (or its error) arrive on the queue."""
    events: queue.Queue[StreamEvent | Exception] = queue.Queue()
    client = Client(url, api_key=key)

    def read() -> None:
        try:
            for event in client.events(interventions=False, read_timeout=10):
                events.put(event)
        except Exception as exc:
            events.put(exc)

    threading.Thread(target=read, daemon=True).start()
    return events, client


def next_event(events: queue.Queue[StreamEvent | Exception], timeout: float = 10) -> StreamEvent:
    """The next snapshot, kill or revive (keep-alives are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        item = events.get(timeout=max(0.0, deadline - time.monotonic()))
        assert isinstance(item, StreamEvent), item
        if item.event != "message":
            return item


def active_ids(event: StreamEvent) -> set[str]:
    return {ks["target_id"] for ks in event.data["active"]}


@pytest.fixture
def live(start_process: Callable[..., Process], private_postgres: PrivateCluster) -> Live:
    return start_live(start_process, private_postgres.create_database())


@pytest.mark.postgres
def test_a_stopped_database_gets_503_while_check_and_the_stream_serve_from_the_index(
    live: Live, private_postgres: PrivateCluster
) -> None:
    assert live.kill("before").status_code == 200
    check = {"target_type": "agent", "target_id": "before"}
    answer = httpx.get(f"{live.url}/api/v1/kill-switch/check", params=check,
                       headers=bearer(live.agent))  # fmt: skip
    assert answer.json()["is_killed"] is True  # the agent's key is known to the server now
    events, following = follow(live.url, live.agent)
    assert active_ids(next_event(events)) == {"before"}

    private_postgres.stop()
    try:
        # Anything that needs the database: 503 problem JSON, Retry-After, no traceback.
        response = httpx.get(f"{live.url}/api/v1/kill-switch/active", headers=bearer(live.admin))
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
        assert "database is unavailable" in response.json()["detail"]
        assert response.headers["retry-after"].isdigit()
        assert response.headers["content-type"] == "application/json"
        killed = live.kill("during")
        assert killed.status_code == 503 and killed.json()["error"] == "database_unavailable"

        # /check, /state (polling guards) and new streams: from the index.
        state = httpx.get(f"{live.url}/api/v1/kill-switch/state", headers=bearer(live.agent))
        assert state.status_code == 200, state.text
        assert {ks["target_id"] for ks in state.json()["active"]} == {"before"}
        answer = httpx.get(f"{live.url}/api/v1/kill-switch/check", params=check,
                           headers=bearer(live.agent))  # fmt: skip
        assert answer.status_code == 200 and answer.json()["is_killed"] is True
        with Client(live.url, api_key=live.agent) as client:
            snapshot = next(iter(client.events(interventions=False)))
        assert snapshot.event == "snapshot" and active_ids(snapshot) == {"before"}

        # Client and CLI name the database, not the URL.
        with (
            Client(live.url, api_key=live.admin) as client,
            pytest.raises(DatabaseUnavailableError, match=UNAVAILABLE),
        ):
            client.active()
        result = run_cli("active", "--url", live.url, "--api-key", live.admin)
        assert result.code == 1, result
        assert UNAVAILABLE in result.stderr, result
        assert "--url" not in result.stderr, result
    finally:
        private_postgres.start()

    # Back: writes work again, and the stream opened before the outage carries the next kill.
    eventually(lambda: live.kill("after").status_code == 200, 30)
    change = next_event(events, 15)
    assert change.event == "kill" and change.data["kill_switch"]["target_id"] == "after"
    following.close()

    log = live.process.output()
    assert log.count("the database is unavailable") == 1, log  # once, not per request
    assert "the database is back" in log, log
    assert "Traceback" not in log, log


@pytest.mark.postgres
def test_a_checkpoint_waits_out_a_database_restart(
    live: Live, private_postgres: PrivateCluster
) -> None:
    guard = Guard(live.url, api_key=live.agent, agent_id="bot", max_staleness=60)
    try:
        assert guard.wait_until_synced(10)
        guard.checkpoint("step", {"n": 1})
        private_postgres.stop()
        back = threading.Event()

        def restart_later() -> None:
            private_postgres.start()
            back.set()

        timer = threading.Timer(3.0, restart_later)  # the outage: 3 s and PostgreSQL's start
        timer.start()
        try:
            started = time.monotonic()
            guard.checkpoint("step", {"n": 2})  # retried until the database is back
            assert back.is_set(), "the checkpoint returned before the database was back"
            assert time.monotonic() - started < 30
        finally:
            timer.join()
        assert guard.load_checkpoint("step") == {"n": 2}
    finally:
        guard.close()


@pytest.mark.postgres
def test_a_checkpoint_gives_up_after_its_bound_with_a_clear_error(
    live: Live, private_postgres: PrivateCluster
) -> None:
    guard = Guard(live.url, api_key=live.agent, agent_id="bot", max_staleness=60)
    try:
        assert guard.wait_until_synced(10)
        guard.source.retry_for = 1.5  # type: ignore[attr-defined]
        private_postgres.stop()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match=UNAVAILABLE):
            guard.checkpoint("step", {"n": 1})
        assert 1.0 <= time.monotonic() - started < 15  # it did retry, and then it stopped
    finally:
        private_postgres.start()
        guard.close()


def test_only_unreachability_is_a_503_not_a_bug(tmp_path: Path) -> None:
    from sqlalchemy import text

    from agentguard.server.problems import from_exception
    from agentguard.server.store.database import Database, is_unavailable

    database = Database(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with pytest.raises(Exception) as bug, database.read() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert not is_unavailable(bug.value) and from_exception(bug.value) is None  # a 500
    finally:
        database.dispose()
    gone = Database(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'a.db'}")
    with pytest.raises(Exception) as away, gone.read() as conn:
        conn.execute(text("SELECT 1"))
    error = from_exception(away.value)
    assert error is not None and error.status == 503
    assert error.response().headers["retry-after"].isdigit()
