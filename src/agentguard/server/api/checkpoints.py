"""``/checkpoints/{key}``: a JSON checkpoint per key, an agent key's under its own namespace."""

from __future__ import annotations

import json

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...checkpoints import encode_checkpoint
from .. import schemas as s
from ..problems import ApiError
from ..store.sqlstore import SQLStore
from .call import Call


class CheckpointHandlers:
    """Stores and reads checkpoints."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def put(self, call: Call) -> BaseModel:
        path: s.CheckpointPath = call.path
        body: s.CheckpointIn = call.body
        encoded = encode_checkpoint(path.key, body.state)
        binding = call.principal.binding
        if binding is not None and not binding.patterns:
            binding.require("key", None)  # speaks for no agent: stores no checkpoints
        await run_in_threadpool(
            self.store.save_checkpoint, call.org, _stored_key(call, path.key), encoded
        )
        return await self.get(call)

    async def get(self, call: Call) -> BaseModel:
        path: s.CheckpointPath = call.path
        stored = _stored_key(call, path.key)
        found = await run_in_threadpool(self.store.get_checkpoint, call.org, stored)
        if found is None:
            raise ApiError("not_found", f"no checkpoint {path.key!r}", field="key")
        state_json, updated_at = found
        return s.CheckpointPublic(key=path.key, state=json.loads(state_json), updated_at=updated_at)


def _stored_key(call: Call, key: str) -> str:
    """Where a checkpoint lives: an agent key's under its agents' namespace."""
    binding = call.principal.binding
    return key if binding is None else binding.namespace + key
