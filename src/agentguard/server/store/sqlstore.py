"""``SQLStore``: the :class:`~agentguard.store.KillStore` on SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

from .acks import AckRows
from .audit import AuditRows
from .checkpoints import CheckpointRows
from .database import Database
from .feed import ChangeFeed
from .heartbeats import HeartbeatRows
from .instances import InstanceRows
from .interventions import InterventionRows
from .killstate import KillStateRows
from .ledger import LedgerRows
from .prune import PruneRows
from .series import SeriesRows
from .usage import UsageRows


class SQLStore(
    KillStateRows,
    InterventionRows,
    AuditRows,
    CheckpointRows,
    HeartbeatRows,
    AckRows,
    InstanceRows,
    UsageRows,
    SeriesRows,
    LedgerRows,
    PruneRows,
):
    """Kill state, audit log, interventions, checkpoints and fleet of many organizations in
    one database, one resource per base class; :attr:`feed` keeps this process's kill indexes
    current with it."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.feed = ChangeFeed(database, self)
