"""``GET /kill-switch/state``: the organization's kill state for polling guards, with an ETag."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...index import KillIndex
from ...protocol import API
from ...records import Snapshot
from .. import schemas as s
from ..store.database import Outage, is_unavailable
from ..store.sqlstore import SQLStore
from .call import Call

STATE_PATH = f"{API}/kill-switch/state"


class KillStatePublic(BaseModel):
    """Every active kill switch of the organization as of ``version``."""

    organization_id: str
    version: int
    active: list[s.KillSwitchPublic]


def public_state(snapshot: Snapshot) -> KillStatePublic:
    """The wire form of a snapshot."""
    return KillStatePublic(
        organization_id=snapshot.organization_id,
        version=snapshot.version,
        active=[s.KillSwitchPublic.model_validate(ks.model_dump()) for ks in snapshot.active],
    )


class KillStateReader:
    """An organization's kill state: from the database, or from its index while that is away."""

    def __init__(self, store: SQLStore, index: Callable[[str], KillIndex], outage: Outage) -> None:
        self.store = store
        self.index = index
        self.outage = outage

    async def state(self, call: Call) -> BaseModel:
        """The kill state for polling; the ETag lets an unchanged poll answer 304."""
        snapshot = await self.snapshot(call.org)  # the index's while the database is away
        call.headers["ETag"] = f'"{snapshot.version}"'
        call.headers["Cache-Control"] = "no-cache"
        return public_state(snapshot)

    async def snapshot(self, org: str) -> Snapshot:
        """The organization's kill state as of one version."""
        try:
            return await run_in_threadpool(self.store.snapshot, org)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.began(exc)
        # Loaded already for a stream (when it was accepted); for /state perhaps not, then this
        # raises the outage again, answered 503.
        index = await run_in_threadpool(self.index, org)
        with index.changed:  # the index's write lock: its contents and version of one moment
            return Snapshot(organization_id=org, version=index.version, active=index.active())
