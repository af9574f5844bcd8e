"""``/webhooks``: register, list, test and remove webhooks; read each one's delivery log."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...errors import InvalidInputError
from .. import schemas as s
from ..store.sqlstore import SQLStore
from ..store.webhooks import Webhook, WebhookDelivery, WebhookSummary
from ..webhooks.addresses import check_url
from ..webhooks.formats import new_signing_secret
from ..webhooks.sender import WebhookSettings
from .call import Call


def _public(hook: Webhook, pending: int = 0, last: WebhookDelivery | None = None) -> dict[str, Any]:
    return {
        **hook.model_dump(),
        "pending": pending,
        "last_delivery": None if last is None else last.model_dump(),
    }


def _summary(row: WebhookSummary) -> s.WebhookPublic:
    return s.WebhookPublic.model_validate(_public(row.webhook, row.pending, row.last_delivery))


class WebhookHandlers:
    """The organization's webhooks (admin only); a signing secret is answered once."""

    def __init__(self, store: SQLStore, settings: WebhookSettings) -> None:
        self.store = store
        self.settings = settings

    async def create(self, call: Call) -> BaseModel:
        body: s.WebhookCreate = call.body
        url = check_url(body.url, allow_private=self.settings.allow_private_addresses)
        secret: str | None = None
        if body.format == "pagerduty":
            if body.routing_key is None:
                raise InvalidInputError(
                    "routing_key",
                    "required for a pagerduty webhook: the integration key of the service's "
                    "Events API v2 integration",
                )
            secret = body.routing_key
        elif body.routing_key is not None:
            raise InvalidInputError("routing_key", "only a pagerduty webhook takes a routing key")
        elif body.format == "standard":
            secret = new_signing_secret()
        hook = await run_in_threadpool(
            self.store.create_webhook,
            call.org,
            url=url,
            format=body.format,
            events=body.events,
            secret=secret,
            name=body.name,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        shown = secret if body.format == "standard" else None  # a routing key is not ours to echo
        return s.WebhookCreated.model_validate({**_public(hook), "secret": shown})

    async def list_webhooks(self, call: Call) -> BaseModel:
        query: s.PageQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_webhooks, call.org, skip=query.skip, limit=query.limit
        )
        return s.WebhooksPublic(data=[_summary(r) for r in rows], count=count)

    async def delete(self, call: Call) -> BaseModel:
        path: s.WebhookPath = call.path
        hook = await run_in_threadpool(
            self.store.delete_webhook,
            call.org,
            path.webhook_id,
            actor=call.principal.actor,
            request_id=call.request_id,
        )
        return s.WebhookPublic.model_validate(_public(hook))

    async def test(self, call: Call) -> BaseModel:
        path: s.WebhookPath = call.path
        delivery = await run_in_threadpool(
            self.store.queue_webhook_test, call.org, path.webhook_id, actor=call.principal.actor
        )
        return s.WebhookDeliveryPublic.model_validate(delivery.model_dump())

    async def deliveries(self, call: Call) -> BaseModel:
        path: s.WebhookPath = call.path
        query: s.WebhookDeliveryQuery = call.query
        rows, count = await run_in_threadpool(
            self.store.list_deliveries,
            call.org,
            path.webhook_id,
            status=query.status,
            event_id=query.event_id,
            skip=query.skip,
            limit=query.limit,
        )
        return s.WebhookDeliveriesPublic(
            data=[s.WebhookDeliveryPublic.model_validate(r.model_dump()) for r in rows],
            count=count,
        )
