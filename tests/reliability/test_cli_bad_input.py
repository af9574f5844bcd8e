"""Bad input on every CLI command: malformed, oversized and wrong-typed arguments and options
are a usage error (exit code 2) naming the option or argument, print nothing on stdout, never
hang or crash with a traceback, and leave nothing half-written on the server.

Each case runs ``agentguard`` as a subprocess (with a deadline) against ``agentguard serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.api import bearer
from support.cli import Server, run, start_server
from support.processes import stop

LONG_ID = "x" * 257
CASES: list[tuple[list[str], str]] = [
    # (arguments, what the error message must name)
    (["kill", "robot", "x"], "'TYPE'"),
    (["kill", "agent", ""], "'ID'"),
    (["kill", "agent", "   "], "'ID'"),
    (["kill", "agent", "\x1c"], "'ID'"),
    (["kill", "agent", LONG_ID], "'ID'"),
    (["kill", "agent", "x", "--reason", "r" * 2001], "'--reason'"),
    (["kill", "agent", "x", "--wait", "--timeout", "nan"], "'--timeout'"),
    (["kill", "agent", "x", "--wait", "--timeout", "-1"], "'--timeout'"),
    (["kill", "agent", "x", "--timeout", "soon"], "'--timeout'"),
    (["kill", "agent", "x", "--url", "not-a-url"], "'--url'"),
    (["kill", "agent", "x", "--bogus"], "'--bogus'"),
    (["revive", "mission", "\t"], "'ID'"),
    (["revive", "agent", LONG_ID], "'ID'"),
    (["revive", "robot", "x"], "'TYPE'"),
    (["check", "tool", ""], "'ID'"),
    (["check", "tool", "\x85"], "'ID'"),
    (["check", "agent"], "'ID'"),
    (["active", "--limit", "1001"], "'--limit'"),
    (["active", "--limit", "many"], "'--limit'"),
    (["active", "--skip", "-1"], "'--skip'"),
    (["active", "--skip", "99999999999"], "'--skip'"),
    (["agents", LONG_ID], "AGENT_ID"),
    (["agents", "--limit", "0"], "'--limit'"),
    (["interventions", "--since", "yesterday"], "'--since'"),
    (["interventions", "--since", "99999999d"], "'--since'"),
    (["interventions", "--type", "SOFT"], "'--type'"),
    (["interventions", "--target-type", "robot"], "'--target-type'"),
    (["interventions", "--target-id", LONG_ID], "'--target-id'"),
    (["interventions", "--action", "a" * 257], "'--action'"),
    (["audit", "--action", "explode"], "'--action'"),
    (["audit", "--since", "99999999999999999999s"], "'--since'"),
    (["audit", "--target-type", "robot"], "'--target-type'"),
    (["audit", "--limit", "-3"], "'--limit'"),
    (["tail", "--count", "0"], "'--count'"),
    (["tail", "--count", "many"], "'--count'"),
    (["tail", "--timeout", "0"], "'--timeout'"),
    (["tail", "--timeout", "nan", "--count", "1"], "'--timeout'"),
    (["tail", "--timeout", "inf", "--count", "1"], "'--timeout'"),
    (["keys", "create", "--scope", "root"], "'--scope'"),
    (["keys", "create"], "'--scope'"),
    (["keys", "create", "--scope", "agent", "--owner", "o" * 257], "'--owner'"),
    (["keys", "create", "--scope", "agent", "--name", ""], "'--name'"),
    (["keys", "list", "--limit", "0"], "'--limit'"),
    (["keys", "list", "--org", "org_b"], "--org"),
    (["keys", "revoke", "ag_!!!"], "'KEY_ID'"),
    (["keys", "revoke", "k" * 33], "'KEY_ID'"),
    (
        ["keys", "create", "--scope", "agent", "--database-url", "mysql://x/y", "--owner", "u"],
        "'--database-url'",
    ),  # fmt: skip
    (["keys", "create", "--scope", "agent", "--database-url", "{database}"], "--owner"),
    (
        [
            "keys",
            "create",
            "--scope",
            "agent",
            "--database-url",
            "{database}",
            "--owner",
            "u",
            "--url",
            "{url}",
        ],
        "--database-url",
    ),  # fmt: skip
    (["db", "upgrade", "--database-url", "mysql://x"], "'--database-url'"),
    (["db", "upgrade", "--database-url", "::::"], "'--database-url'"),
    (["db", "prune", "--database-url", "{database}"], "'--older-than'"),
    (["db", "prune", "--database-url", "{database}", "--older-than", "12h"], "'--older-than'"),
    (["db", "prune", "--database-url", "{database}", "--older-than", "-3d"], "'--older-than'"),
    (["db", "prune", "--database-url", "{database}", "--older-than", "9999999d"], "'--older-than'"),
    (
        ["db", "prune", "--database-url", "{database}", "--older-than", "99999999999999d"],
        "'--older-than'",
    ),
    (["db", "prune", "--database-url", "mysql://x", "--older-than", "30d"], "'--database-url'"),
    (["webhooks", "add", "ftp://hooks.example.com/x"], "'URL'"),
    (["webhooks", "add", "http://10.0.0.1/hook"], "'URL'"),
    (["webhooks", "add", "https://u:p@hooks.example.com/x"], "'URL'"),
    (["webhooks", "add", "https://hooks.example.com/" + "x" * 2048], "'URL'"),
    (["webhooks", "add", "https://hooks.example.com/x", "--event", "drill"], "'--event'"),
    (["webhooks", "add", "https://hooks.example.com/x", "--format", "teams"], "'--format'"),
    (["webhooks", "add", "https://hooks.example.com/x", "--format", "pagerduty"], "--routing-key"),
    (
        ["webhooks", "add", "https://h.example/x", "--format", "pagerduty", "--routing-key", "R 0"],
        "'--routing-key'",
    ),  # fmt: skip
    (["webhooks", "add", "https://hooks.example.com/x", "--name", ""], "'--name'"),
    (["webhooks", "remove", "wh_!!"], "'ID'"),
    (["webhooks", "test", "w" * 33], "'ID'"),
    (["webhooks", "test", "wh_x", "--timeout", "nan"], "'--timeout'"),
    (["webhooks", "deliveries", "wh_x", "--status", "lost"], "'--status'"),
    (["webhooks", "list", "--limit", "0"], "'--limit'"),
    (["serve", "--webhook-timeout", "0"], "'--webhook-timeout'"),
    (["serve", "--webhook-retry-for", "forever"], "'--webhook-retry-for'"),
    (["serve", "--port", "70000"], "'--port'"),
    (["serve", "--workers", "0"], "'--workers'"),
    (["serve", "--log-level", "loud"], "'--log-level'"),
    (["serve", "--database-url", "mysql://x"], "'--database-url'"),
    (["nonsense"], "'nonsense'"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cli-bad-input"))
    yield s
    stop(s.popen)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """An operator and an admin key of one organization, the one every case runs in."""
    return {scope: server.key(scope, org="org_bad_input") for scope in ("operator", "admin")}


def written(server: Server, admin: str) -> dict[str, Any]:
    """Everything a command could have written in the organization (and its keys anywhere)."""
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(admin)) as client:
        return {
            "active": client.get("/kill-switch/active").json(),
            "audit": client.get("/audit", params={"limit": 1000}).json(),
            "keys": client.get("/keys").json()["count"],
            "interventions": client.get("/interventions").json()["count"],
            "webhooks": client.get("/webhooks").json()["count"],
        }


def all_keys(server: Server) -> int:
    from agentguard.server.auth.keys import KeyStore
    from agentguard.server.store.database import Database
    from agentguard.server.store.sqlstore import SQLStore

    database = Database(server.database_url)
    try:
        return KeyStore(database, SQLStore(database).feed).count()
    finally:
        database.dispose()


@pytest.mark.parametrize(
    ("args", "names"), CASES, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else None
)
def test_bad_input_is_a_usage_error_naming_it(
    server: Server, keys: dict[str, str], args: list[str], names: str
) -> None:
    args = [a.format(database=server.database_url, url=server.url) for a in args]
    key = keys["admin"] if args[0] in ("keys", "webhooks") else keys["operator"]
    before, keys_before = written(server, keys["admin"]), all_keys(server)
    result = server.cli(key, *args, timeout=20)  # a hang fails here, with TimeoutExpired
    assert result.code == 2, result
    assert names in result.stderr, result
    assert "Traceback" not in result.stderr, result
    assert result.stdout == "", result
    assert written(server, keys["admin"]) == before
    assert all_keys(server) == keys_before


@pytest.mark.parametrize(
    ("zone", "when"),
    [("Asia/Tokyo", "0001-01-01T00:00:00"), ("America/New_York", "9999-12-31T23:59:59")],
)
def test_a_local_time_beyond_utcs_range_is_a_usage_error(
    server: Server, keys: dict[str, str], zone: str, when: str
) -> None:
    env = {**server.env(keys["operator"]), "TZ": zone}
    result = run("interventions", "--since", when, env=env, timeout=20)
    assert result.code == 2 and "'--since'" in result.stderr, result
    assert "Traceback" not in result.stderr, result
