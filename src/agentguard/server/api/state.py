"""``GET /kill-switch/state``: the organization's kill state for polling guards, with an ETag.

The ETag is the version. ``If-None-Match`` of the current one answers 304. A poller that also
sends ``A-IM: changes`` (RFC 3229 delta encoding) and names an older version gets ``226 IM
Used`` with only the changes since (:class:`KillStateChangesPublic`) while the change log still
covers them; otherwise, and for every other client, the full state as before, gzip-compressed
when ``Accept-Encoding`` takes gzip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ...index import KillIndex
from ...protocol import API, DELTA_IM
from ...records import KillChange, Snapshot
from .. import schemas as s
from ..store.database import Outage, is_unavailable
from ..store.sqlstore import SQLStore
from .call import Call
from .compression import accepts_gzip, gzip_bytes
from .snapshots import SnapshotCache

STATE_PATH = f"{API}/kill-switch/state"
DELTA_LIMIT = 1000  # more changes than this since a guard's version: a snapshot is cheaper
_ETAG = re.compile(r'(?:W/)?"([0-9]{1,18})"')


class KillStatePublic(BaseModel):
    """Every active kill switch of the organization as of ``version``."""

    organization_id: str
    version: int
    active: list[s.KillSwitchPublic]


class KillChangePublic(BaseModel):
    """The data of a ``kill`` or ``revive`` event: one change of the kill state."""

    version: int
    kind: Literal["kill", "revive"]
    kill_switch: s.KillSwitchPublic


class KillStateChangesPublic(BaseModel):
    """The changes of the kill state after the version a poller named (``226 IM Used``)."""

    organization_id: str
    version: int
    changes: list[KillChangePublic]


def public_state(snapshot: Snapshot) -> KillStatePublic:
    """The wire form of a snapshot."""
    return KillStatePublic(
        organization_id=snapshot.organization_id,
        version=snapshot.version,
        active=[s.KillSwitchPublic.model_validate(ks.model_dump()) for ks in snapshot.active],
    )


def encode_state(snapshot: Snapshot) -> bytes:
    """A snapshot as the JSON of ``/state`` and of the stream's ``snapshot`` event."""
    return public_state(snapshot).model_dump_json().encode()


def change_json(change: KillChange) -> dict[str, object]:
    """A change in its public form (the data of a ``kill`` or ``revive`` event)."""
    return {
        "version": change.version,
        "kind": change.kind,
        "kill_switch": json.loads(
            s.KillSwitchPublic.model_validate(change.kill_switch.model_dump()).model_dump_json()
        ),
    }


def etag_version(value: str | None) -> int | None:
    """The version an ``If-None-Match`` names (one of our ETags), else ``None``."""
    match = _ETAG.fullmatch((value or "").strip())
    return int(match.group(1)) if match else None


def wants_delta(a_im: str | None) -> bool:
    """Whether an ``A-IM`` header asks for the changes since the version named."""
    return any(item.split(";")[0].strip().lower() == DELTA_IM for item in (a_im or "").split(","))


class KillStateReader:
    """An organization's kill state: from the database, or from its index while that is away."""

    def __init__(
        self,
        store: SQLStore,
        index: Callable[[str], KillIndex],
        outage: Outage,
        snapshots: SnapshotCache,
    ) -> None:
        self.store = store
        self.index = index
        self.outage = outage
        self.snapshots = snapshots

    async def state(self, call: Call) -> Response:
        """The kill state for polling: 304 when unchanged, 226 with the changes when asked."""
        headers = call.request.headers
        known = etag_version(headers.get("if-none-match"))
        current = await self.version(call.org)
        base = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding, A-IM"}
        if known is not None and known == current:
            return Response(status_code=304, headers={**base, "ETag": f'"{current}"'})
        if known is not None and known < current and wants_delta(headers.get("a-im")):
            changes = await self._unless_unavailable(
                partial(self.store.changes_since, call.org, known, limit=DELTA_LIMIT)
            )
            if changes is not None and len(changes) < DELTA_LIMIT:
                version = max([known, *(c.version for c in changes)])
                body = json.dumps(
                    {
                        "organization_id": call.org,
                        "version": version,
                        "changes": [change_json(c) for c in changes],
                    }
                )
                im = {**base, "ETag": f'"{version}"', "IM": DELTA_IM}
                content = body.encode()
                if accepts_gzip(headers.get("accept-encoding")) and len(content) > 1024:
                    content = gzip_bytes(content)
                    im["Content-Encoding"] = "gzip"
                return Response(content, status_code=226, media_type="application/json", headers=im)
        encoded = await self.snapshots.get(call.org)
        headers_out = {**base, "ETag": f'"{encoded.version}"'}
        if accepts_gzip(headers.get("accept-encoding")):
            gz = await run_in_threadpool(encoded.gzip)
            headers_out["Content-Encoding"] = "gzip"
            return Response(gz, media_type="application/json", headers=headers_out)
        return Response(encoded.json, media_type="application/json", headers=headers_out)

    async def version(self, org: str) -> int:
        """The organization's kill-state version (its index's while the database is away)."""
        versions = await self._unless_unavailable(self.store.versions, [org])
        if versions is not None:
            return int(versions[org])
        index = await run_in_threadpool(self.index, org)
        return index.version

    async def _unless_unavailable(self, read: Callable[..., Any], *args: Any) -> Any:
        try:
            return await run_in_threadpool(read, *args)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.began(exc)
            return None
