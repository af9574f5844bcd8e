"""Alembic environment: runs on the connection ``Database.upgrade`` hands over."""

from __future__ import annotations

from alembic import context

from agentguard.server.store.database import VERSION_TABLE
from agentguard.server.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "agentguard's migrations run through `agentguard db upgrade` or "
        "agentguard.server.store.database.Database.upgrade(), which supply the connection"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
