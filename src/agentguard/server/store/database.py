"""One database behind the server: engine set-up per backend, transactions and migrations."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from ...errors import InvalidInputError

logger = logging.getLogger("agentguard.server")

MIGRATIONS = Path(__file__).parent.parent / "migrations"
# Any constant shared by every agentguard process: serialises concurrent upgrades on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x61677264
SQLITE_BUSY_TIMEOUT = 30.0
# Our own Alembic version table, so a host app's Alembic history stays separate.
VERSION_TABLE = "agentguard_alembic_version"
# Seconds a 503 asks clients to wait while the database is unreachable (a restart or failover).
RETRY_AFTER = 2
# SQLite errors that say "not now" rather than "bug": the file is locked, gone, or failing.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (answered 503), not a bug.

    PostgreSQL: any operational or interface error (refused or dropped connections, a server
    shutting down or starting up); a pool with no connection free in time. SQLite: a lock held
    past the busy timeout, a file that cannot be opened, an I/O error.
    """
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc.orig, sqlite3.Error):
            return any(sign in str(exc.orig).lower() for sign in _SQLITE_UNAVAILABLE)
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    if type(exc).__module__.startswith("psycopg"):  # the LISTEN thread's raw connection
        import psycopg

        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return False


def describe(exc: BaseException) -> str:
    """One line saying why the database is unavailable (no SQL, no traceback)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class Outage:
    """Whether the database is unreachable: logged once when that starts and once when it ends,
    not a traceback per request."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()
        self.count = 0  # outages seen

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def began(self, exc: BaseException) -> None:
        """A request or background task found the database unreachable."""
        if self._since is not None:
            return
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            self.count += 1
        logger.warning(
            "agentguard: the database is unavailable (%s); answering 503 with Retry-After "
            "until it is back (/check and the stream keep serving from the index)",
            describe(exc),
        )

    def ended(self) -> None:
        """A transaction succeeded (cheap when there was no outage)."""
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            logger.warning(
                "agentguard: the database is back after %.1f s", time.monotonic() - since
            )


def normalize_url(database_url: str | URL | None) -> URL:
    """The SQLAlchemy URL to use: in-memory SQLite by default, psycopg 3 for PostgreSQL."""
    if database_url is None or database_url == "":
        return make_url("sqlite://")
    try:
        url = make_url(database_url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise InvalidInputError("database_url", f"not a database URL: {database_url!r}") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.get_driver_name() in ("", "psycopg2", "postgres", "postgresql"):
            url = url.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise InvalidInputError(
            "database_url", f"must be a sqlite:// or postgresql:// URL; got {backend}://"
        )
    return url


class Database:
    """An engine plus the transaction discipline of its backend.

    SQLite: write transactions start with ``BEGIN IMMEDIATE`` (taking the write lock up front,
    so concurrent writers wait on the busy timeout instead of failing to upgrade a read lock);
    in-memory SQLite shares one connection (``StaticPool``) guarded by a lock. PostgreSQL:
    multi-statement reads run at ``REPEATABLE READ`` so they see one snapshot.
    """

    def __init__(self, database_url: str | URL | None = None, *, pool_size: int = 10) -> None:
        self.url = normalize_url(database_url)
        self.backend = self.url.get_backend_name()
        self.is_sqlite = self.backend == "sqlite"
        self.is_postgres = not self.is_sqlite
        self.in_memory = self.is_sqlite and self.url.database in (None, "", ":memory:")
        # In-memory SQLite is one shared connection: every transaction takes this lock.
        # File SQLite: writers of this process queue here rather than on SQLite's busy loop.
        self._memory_lock = threading.RLock() if self.in_memory else None
        self._write_lock = threading.Lock() if self.is_sqlite and not self.in_memory else None
        self.engine = self._create_engine(pool_size)
        self.outage = Outage()
        self._write_engine: Engine
        self._read_engine: Engine
        if self.is_sqlite:
            self._write_engine = self.engine.execution_options(agentguard_begin="IMMEDIATE")
            self._read_engine = self.engine
        else:
            self._write_engine = self.engine
            self._read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")

    def _create_engine(self, pool_size: int) -> Engine:
        if self.in_memory:
            engine = create_engine(
                self.url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        elif self.is_sqlite:
            engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=2 * pool_size,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT},
            )
        else:
            engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True
            )
        if self.is_sqlite:
            _configure_sqlite(engine, wal=not self.in_memory)
        return engine

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._locked(self._write_lock), self._write_engine.begin() as conn:
            yield conn
        self.outage.ended()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that sees one consistent snapshot."""
        with self._locked(None), self._read_engine.begin() as conn:
            yield conn
        self.outage.ended()

    @contextlib.contextmanager
    def _locked(self, lock: threading.Lock | None) -> Iterator[None]:
        held = self._memory_lock or lock
        if held is None:
            yield
            return
        with held:
            yield

    def notify(self, conn: Connection, channel: str, payload: str) -> None:
        """Queue a PostgreSQL NOTIFY, delivered when ``conn``'s transaction commits."""
        if self.is_postgres:
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": channel, "payload": payload},
            )

    def upgrade(self) -> None:
        """Apply pending migrations, serialised against other processes doing the same."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as conn:
            if self.is_postgres:
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        """The schema revision the database is at, or ``None`` before the first migration."""
        with self.read() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            value = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return str(value) if value is not None else None

    def psycopg_conninfo(self) -> str:
        """A libpq connection string for a raw psycopg connection (the LISTEN thread)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def sqlite_path(self) -> str | None:
        """The SQLite file, or ``None`` for in-memory or PostgreSQL."""
        return None if (self.is_postgres or self.in_memory) else str(self.url.database)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, so we choose its kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        if wal:
            _enable_wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("agentguard_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a no-op once it is), waiting out other connections doing the same.

    The switch holds a shared lock while it asks for an exclusive one, so SQLite answers "database
    is locked" at once instead of calling the busy handler (which could deadlock). Several
    processes opening a new file together meet exactly that; retry up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    delay = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
