"""How a revocation reaches every process on PostgreSQL: the revoking call returns only after
every change listener has dropped the key, and a process whose listener is not current does
not answer from its cache. (The race over real HTTP: tests/reliability/test_revocation_race.py.)

Two ``KillSwitchServer`` objects on one database stand for two processes: each has its own
engine, key cache and listener connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from agentguard.server import KillSwitchServer
from agentguard.server.store.feed import (
    KEY_CACHE_LEASE,
    KEYS_CHANNEL,
    LISTENER_NAME,
    REVOCATION_WAIT,
)

pytestmark = pytest.mark.postgres


def two_processes(
    make_server: Callable[..., KillSwitchServer], url: str
) -> tuple[KillSwitchServer, KillSwitchServer, str]:
    """Two started servers, and a key that the second has verified (and cached)."""
    one, two = make_server(url), make_server(url)
    one.start()
    two.start()
    token = one.create_key("org_a", owner="usr_bot", scopes=["agent"])
    assert two.keys.verify(token) is not None
    assert two.keys.cached(token) is not None
    return one, two, token


def test_revoke_returns_after_every_other_process_dropped_the_key(
    make_server: Callable[..., KillSwitchServer], make_postgres_url: Callable[[], str]
) -> None:
    for _ in range(20):  # without the wait, the other process still has it for a moment
        one, two, token = two_processes(make_server, make_postgres_url())
        one.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="usr_admin")
        assert two.keys.cached(token) is None
        assert two.keys.verify(token) is None
        # Each pair closed at once: forty servers' listeners, senders and expiry loops open
        # together would hold more connections than PostgreSQL's default 100.
        one.close()
        two.close()


def test_a_process_whose_listener_is_gone_does_not_trust_its_cache(
    make_server: Callable[..., KillSwitchServer], make_postgres_url: Callable[[], str]
) -> None:
    _, two, token = two_processes(make_server, make_postgres_url())
    two.feed.stop()  # no listener: revocations could go unheard
    assert two.keys.cached(token) is None
    assert two.keys.verify(token) is not None  # read from the database instead


def test_a_listener_that_does_not_answer_delays_revocation_past_its_lease(
    make_server: Callable[..., KillSwitchServer],
    make_postgres_url: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_postgres_url()
    one, _, token = two_processes(make_server, url)
    conninfo = one.database.psycopg_conninfo()
    # A listener that hears the revocation but never acknowledges it (a hung process).
    with psycopg.connect(conninfo, autocommit=True, application_name=LISTENER_NAME) as hung:
        hung.execute(f"LISTEN {KEYS_CHANNEL}")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="agentguard.server"):
            one.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="usr_admin")
        waited = time.monotonic() - started
    assert waited >= REVOCATION_WAIT > KEY_CACHE_LEASE
    assert "did not acknowledge a key revocation" in caplog.text


def test_an_unrelated_database_s_listeners_are_not_waited_for(
    make_server: Callable[..., KillSwitchServer], make_postgres_url: Callable[[], str]
) -> None:
    one, _, token = two_processes(make_server, make_postgres_url())
    elsewhere: Any = make_server(make_postgres_url())
    elsewhere.start()  # listening on another database
    started = time.monotonic()
    one.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="usr_admin")
    assert time.monotonic() - started < REVOCATION_WAIT
