"""``/keys``: create, list and revoke the organization's API keys."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import schemas as s
from ..auth.keys import KeyStore
from ..inputs import as_public
from .call import Call


class KeyHandlers:
    """The organization's API keys; a secret is answered once, when its key is created."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def create(self, call: Call) -> BaseModel:
        body: s.ApiKeyCreate = call.body
        key, secret = await run_in_threadpool(
            self.keys.create,
            call.org,
            owner=body.owner or call.principal.user_id,
            scopes=body.scopes,
            name=body.name,
            agents=body.agents,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        return s.ApiKeyCreated(**key.model_dump(), secret=secret)

    async def list_keys(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        keys, count = await run_in_threadpool(
            self.keys.list, call.org, skip=query.skip, limit=query.limit
        )
        return s.ApiKeysPublic(data=[as_public(s.ApiKeyPublic, k) for k in keys], count=count)

    async def revoke(self, call: Call) -> BaseModel:
        path: s.KeyPath = call.path
        key = await run_in_threadpool(
            self.keys.revoke,
            call.org,
            path.key_id,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        return as_public(s.ApiKeyPublic, key)
