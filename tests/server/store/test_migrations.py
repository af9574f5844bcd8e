"""Schema migrations: applied on start and by ``agentguard db upgrade``, idempotent."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from sqlalchemy import create_engine, inspect

from agentguard.server.store.database import Database
from agentguard.server.store.tables import metadata

TABLES = {t.name for t in metadata.sorted_tables}
HEAD = "0014"  # the newest revision in server/migrations/versions


def upgrade(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "db", "upgrade", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_upgrade_command_creates_the_schema(database_url: str) -> None:
    assert Database(database_url).revision() is None
    first = upgrade(database_url)
    assert first.returncode == 0, first.stderr
    assert f"database at revision {HEAD} (was None)" in first.stdout
    engine = create_engine(Database(database_url).url)
    inspector = inspect(engine)
    assert TABLES | {"agentguard_alembic_version"} <= set(inspector.get_table_names())
    indexes = {i["name"]: i for i in inspector.get_indexes("agentguard_kill_switches")}
    assert indexes["agentguard_kill_switches_one_active"]["unique"]
    by_seq = {i["name"]: i for i in inspector.get_indexes("agentguard_interventions")}
    assert by_seq["agentguard_interventions_org_seq"]["column_names"] == ["organization_id", "seq"]
    engine.dispose()
    again = upgrade(database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"database at revision {HEAD}"


def test_migrations_match_the_tables(database_url: str) -> None:
    """The migrated schema has every column of ``tables.py`` (so the two cannot drift)."""
    database = Database(database_url)
    database.upgrade()
    inspector = inspect(database.engine)
    for table in metadata.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name
    database.dispose()


def test_concurrent_first_starts_do_not_collide(make_server: Any, database_url: str) -> None:
    import threading

    servers = [make_server(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(server: Any) -> None:
        try:
            server.start()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert servers[0].database.revision() == HEAD


def test_many_connections_opening_a_new_sqlite_file_together(tmp_path: Any) -> None:
    """Switching a new file to WAL answers "database is locked" at once, past the busy timeout,
    when two connections try it together; every connection must still open (about 2% of rounds
    failed before the retry)."""
    import threading

    from sqlalchemy import text

    errors: list[BaseException] = []
    for round_ in range(400):
        databases = [Database(f"sqlite:///{tmp_path}/{round_}.db") for _ in range(8)]
        barrier = threading.Barrier(len(databases))

        def open_and_read(database: Database, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                with database.read() as conn:
                    conn.execute(text("SELECT 1"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_read, args=(d, barrier)) for d in databases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for database in databases:
            database.dispose()
    assert errors == []


def test_bad_database_url_is_a_usage_error() -> None:
    result = upgrade("mysql://nope")
    assert result.returncode == 2
    assert "--database-url" in result.stderr and "mysql" in result.stderr


def test_keys_from_before_0005_speak_for_no_agent(database_url: str) -> None:
    """Upgrading 0004 -> 0005 keeps every key working for checks; agents stay unset (NULL)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text
    from starlette.testclient import TestClient

    from agentguard.server import KillSwitchServer
    from agentguard.server.auth.keys import hash_secret
    from agentguard.server.store.database import MIGRATIONS

    database = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    token = "ag_Legacy01_" + "L" * 40
    with database.write() as conn:
        conn.execute(
            text(
                "INSERT INTO agentguard_api_keys (id, organization_id, owner, scopes, "
                "secret_hash, created_by, created_at) VALUES ('ag_Legacy01', 'org_a', 'bot', "
                "'agent', :digest, 'old', CURRENT_TIMESTAMP)"
            ),
            {"digest": hash_secret(token)},
        )
    database.dispose()
    server = KillSwitchServer(database_url)
    try:
        server.start()
        assert server.database.revision() == HEAD
        (key,) = server.keys.list("org_a")[0]
        assert key.agents is None
        client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
        target = {"target_type": "agent", "target_id": "x"}
        assert client.get("/api/v1/kill-switch/check", params=target).status_code == 200
        beat = {"instance_id": "i", "agent_id": "x", "interval": 10, "executed": 0,
                "refused": 0, "failed": 0, "cost_usd": 0, "version": 0}  # fmt: skip
        refused = client.post("/api/v1/heartbeats", json=beat)
        assert refused.status_code == 403 and "re-create" in refused.json()["detail"]
    finally:
        server.close()
