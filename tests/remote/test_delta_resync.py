"""Remote guards resyncing with only what they missed, against real server processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentguard import Guard, PolicyViolationError, scope
from agentguard.server.store.database import Database
from agentguard.server.store.sqlstore import SQLStore
from support import eventually
from support.live import Live
from support.tcpproxy import TcpProxy


@pytest.fixture
def guards() -> Iterator[list[Guard]]:
    made: list[Guard] = []
    yield made
    for guard in made:
        guard.close()


def refuses(guard: Guard, agent: str) -> bool:
    with scope(agent_id=agent):
        try:
            guard.enforce("probe")
        except PolicyViolationError:
            return True
    return False


def prune_change_log(database_url: str) -> None:
    database = Database(database_url)
    try:
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        SQLStore(database).prune(later, change_log_too=True)
    finally:
        database.dispose()


def stream_guard(url: str, key: str, guards: list[Guard], **options: Any) -> Guard:
    guard = Guard(url, api_key=key, max_staleness=30, **options)
    guards.append(guard)
    assert guard.wait_until_synced(5)
    return guard


def test_a_reconnecting_stream_guard_gets_only_what_it_missed(
    live: Live, guards: list[Guard]
) -> None:
    live.kill("early")
    proxy = TcpProxy(live.process.port)
    try:
        guard = stream_guard(proxy.url, live.agent, guards)
        assert guard.source.resyncs == 1 and refuses(guard, "early")
        proxy.refusing = True
        proxy.cut()
        live.kill("bot")  # missed while cut off
        live.revive("early")
        time.sleep(0.2)
        proxy.refusing = False
        eventually(lambda: refuses(guard, "bot") and not refuses(guard, "early"), 15)
        eventually(lambda: guard.source.resumes == 1, 5)  # the resumed event after them
        assert guard.source.resyncs == 1
        assert guard.version == 3
        # Past the change log: the next reconnection installs a full snapshot instead.
        proxy.refusing = True
        proxy.cut()
        live.kill("late")
        prune_change_log(live.database_url)
        proxy.refusing = False
        eventually(lambda: refuses(guard, "late"), 15)
        assert guard.source.resyncs == 2 and guard.source.resumes == 1
        live.kill("live")  # and it is live again
        eventually(lambda: refuses(guard, "live"), 5)
    finally:
        proxy.close()


def test_a_polling_guard_applies_the_changes_since_its_etag(
    live: Live, guards: list[Guard]
) -> None:
    guard = stream_guard(live.url, live.agent, guards, mode="poll", poll_interval=0.1)
    assert guard.source.resyncs == 1
    live.kill("bot")
    eventually(lambda: refuses(guard, "bot"), 5)
    live.revive("bot")
    eventually(lambda: not refuses(guard, "bot"), 5)
    assert guard.source.resyncs == 1 and guard.source.resumes == 2
    # (A poll past the change log gets the whole state: tests/server/test_resync.py.)
    prune_change_log(live.database_url)
    live.kill("again")  # the log has it (version 3), but not the revive the guard has
    eventually(lambda: refuses(guard, "again"), 5)
    assert guard.source.resumes == 3 and guard.source.resyncs == 1  # 2 -> 3 is covered


def test_a_refusal_names_the_kill_with_the_server_out_of_reach(
    live: Live, guards: list[Guard]
) -> None:
    """The compact index keeps what a refusal says: why, who, when and which kill."""
    proxy = TcpProxy(live.process.port)
    try:
        guard = stream_guard(proxy.url, live.agent, guards)
        killed = live.post(
            "/kill-switch/kill", target_type="run", target_id="run-1", reason="looping on retries"
        ).json()
        eventually(lambda: guard.version == 1, 5)
        proxy.refusing = True
        proxy.cut()
        with scope(run_id="run-1"), pytest.raises(PolicyViolationError) as refused:
            guard.enforce("send")
        error = refused.value
        assert (error.target_type, error.target_id) == ("run", "run-1")
        assert error.reason == "looping on retries" and error.killed_by == killed["killed_by"]
        assert error.killed_at == datetime.fromisoformat(killed["killed_at"].replace("Z", "+00:00"))
        assert error.kill_switch_id == killed["id"]
    finally:
        proxy.close()
