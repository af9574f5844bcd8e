"""What the resource modules share: the database they use and a few query pieces."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Table, and_
from sqlalchemy.dialects import postgresql, sqlite

from .database import Database


class Rows:
    """The rows of one resource, read and written in transactions of ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT of the connection's dialect, which has ``on_conflict_do_*``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def where_equal(base: Any, equal: Mapping[Any, object]) -> Any:
    """``base`` and ``column == value`` for each value given (``None``: any)."""
    clauses = [base] + [column == value for column, value in equal.items() if value is not None]
    return and_(*clauses)


def aware(when: datetime | str) -> datetime:
    """SQLite's aggregate functions return naive UTC datetimes (or strings): make them aware."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
