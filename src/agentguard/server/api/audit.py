"""``/audit``: the organization's audit log, newest first."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import schemas as s
from ..inputs import as_public
from ..store.sqlstore import SQLStore
from .call import Call


class AuditHandlers:
    """Reads the audit log."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def list_audit(self, call: Call) -> BaseModel:
        q: s.AuditQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_audit,
            call.org,
            action=q.action,
            target_type=q.target_type,
            target_id=q.target_id,
            since=q.since,
            skip=q.skip,
            limit=q.limit,
        )
        return s.AuditEntriesPublic(
            data=[as_public(s.AuditEntryPublic, r) for r in rows], count=count
        )
