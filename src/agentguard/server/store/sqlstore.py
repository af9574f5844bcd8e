"""``SQLStore``: the :class:`~agentguard.store.KillStore` on SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

from .acks import AckRows
from .audit import AuditRows
from .checkpoints import CheckpointRows
from .counters import CounterRows
from .database import Database
from .drills import DrillRows
from .feed import ChangeFeed
from .heartbeats import HeartbeatRows
from .instances import InstanceRows
from .interventions import InterventionRows
from .killstate import KillStateRows
from .ledger import LedgerRows
from .open_streams import OpenStreamRows
from .prune import PruneRows
from .revives import ReviveRequestRows
from .series import SeriesRows
from .usage import UsageRows
from .webhooks import Outbox, WebhookRows


class SQLStore(
    ReviveRequestRows,
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
    CounterRows,
    OpenStreamRows,
    WebhookRows,
    DrillRows,
):
    """Kill state, revive requests, audit log, interventions, checkpoints, fleet, metric
    counters and webhooks of many organizations in one database, one resource per base class;
    :attr:`feed` keeps this process's kill indexes current with it, and :attr:`outbox` wakes
    its webhook sender."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.feed = ChangeFeed(database, self)
        self.outbox = Outbox()
