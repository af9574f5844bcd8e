"""Stream limits: per credential and per organization, 429 problem JSON with ``Retry-After``,
configured on ``KillSwitchServer``, by environment and by ``agentguard serve``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from agentguard.errors import InvalidInputError
from agentguard.server import KillSwitchServer
from support import eventually
from support.api import bearer
from support.live import Live, uvicorn_argv
from support.processes import Process
from support.stream_client import STREAM, StreamReader


@pytest.fixture
def readers() -> Iterator[Callable[..., StreamReader]]:
    made: list[StreamReader] = []

    def make(url: str, key: str, **options: Any) -> StreamReader:
        reader = StreamReader(url, headers=bearer(key), **options)
        made.append(reader)
        return reader

    yield make
    for reader in made:
        reader.close()


def assert_refused(reader: StreamReader, limit: str) -> None:
    assert reader.status == 429, (reader.status, reader.body)
    assert reader.headers["content-type"] == "application/json"
    assert int(reader.headers["retry-after"]) >= 1
    assert reader.headers["x-request-id"]
    body = httpx.Response(429, content=reader.body).json()
    assert body["error"] == "too_many_requests" and limit in body["detail"]


def test_streams_beyond_the_limits_are_refused_with_429(
    start_process: Callable[..., Process],
    database_url: str,
    readers: Callable[..., StreamReader],
) -> None:
    env = {
        "AGENTGUARD_DATABASE_URL": database_url,
        "AGENTGUARD_STREAM_KEEPALIVE": "0.3",
        "AGENTGUARD_MAX_STREAMS_PER_KEY": "2",
        "AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION": "3",
    }
    live = Live(start_process(uvicorn_argv(), env=env), database_url)
    held = [readers(live.url, live.agent, params={"include": "interventions"}) for _ in range(2)]
    assert [r.status for r in held] == [200, 200]
    assert_refused(readers(live.url, live.agent), "max_streams_per_key")
    third = readers(live.url, live.admin)  # another key of the organization: its third stream
    assert third.status == 200
    assert_refused(readers(live.url, live.admin), "max_streams_per_organization")
    theirs = readers(live.url, live.other)  # another organization is not affected
    assert theirs.status == 200
    # Ending a stream frees its place at once (as soon as the server sees the disconnect).
    held[0].close()
    again: list[StreamReader] = []

    def admitted() -> bool:
        reader = readers(live.url, live.agent)
        again.append(reader)
        return reader.status == 200

    eventually(admitted, 10)
    # HEAD opens no stream and keeps no place.
    for _ in range(3):
        assert httpx.head(live.url + STREAM, headers=bearer(live.other)).status_code == 200
    assert readers(live.url, live.other).status == 200
    for reader in held[1:] + [third, theirs, again[-1]]:
        assert not reader.ended.is_set() and reader.error is None
    assert "Traceback" not in live.process.output()


def test_agentguard_serve_takes_the_limits(
    start_process: Callable[..., Process], tmp_path: Any, readers: Callable[..., StreamReader]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'serve.db'}"
    argv = [
        sys.executable, "-m", "agentguard.cli", "serve", "--database-url", database_url,
        "--port", "{port}", "--log-level", "warning",
        "--max-streams-per-key", "1", "--max-streams-per-organization", "5",
    ]  # fmt: skip
    live = Live(start_process(argv), database_url)
    assert readers(live.url, live.agent).status == 200
    assert_refused(readers(live.url, live.agent), "max_streams_per_key")
    assert readers(live.url, live.admin).status == 200


def test_agentguard_serve_refuses_a_bad_limit_before_anything_else(tmp_path: Any) -> None:
    import subprocess

    env = {**os.environ, "AGENTGUARD_MAX_STREAMS_PER_KEY": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "serve", "--database-url",
         f"sqlite:///{tmp_path / 'never.db'}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "AGENTGUARD_MAX_STREAMS_PER_KEY" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "never.db").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_streams_per_key", 0),
        ("max_streams_per_organization", -1),
        ("max_streams_per_key", 1.5),
        ("max_streams_per_organization", True),
    ],
)
def test_limits_must_be_whole_positive_numbers(option: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        KillSwitchServer(**{option: value})
    assert raised.value.field == option


def test_defaults_admit_many_streams_per_key() -> None:
    server = KillSwitchServer()
    try:
        assert server.max_streams_per_key == 100 and server.max_streams_per_org == 1000
    finally:
        server.close()
