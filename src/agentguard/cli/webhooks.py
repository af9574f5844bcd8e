"""``webhooks add``, ``list``, ``test``, ``remove`` and ``deliveries`` (needs an admin key)."""

from __future__ import annotations

import time

import click

from ..client import Client, WebhookDelivery
from ..errors import InvalidInputError
from ..protocol import WEBHOOK_EVENTS, WEBHOOK_FORMATS
from . import output as out
from .options import Seconds, json_option, limit_option, remote, skip_option


@click.group()
def webhooks() -> None:
    """Tell people and systems when a kill switch fires: register webhooks.

    \b
    Formats:
      standard   signed JSON (Standard Webhooks: webhook-id, webhook-timestamp,
                 webhook-signature; the secret is shown once, when added)
      slack      a Slack incoming-webhook message
      pagerduty  PagerDuty Events v2: trigger on kill, resolve on revive (--routing-key)

    \b
    Events: kill, revive, rule.tripped, rule.observed, ack.timeout, fail_closed.
    Needs an admin key.
    """


@webhooks.command("add")
@click.argument("endpoint", metavar="URL")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(WEBHOOK_EVENTS),
    help="An event to send; repeat for several (default: every event).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(WEBHOOK_FORMATS),
    default="standard",
    show_default=True,
    help="How to send it.",
)
@click.option(
    "--routing-key",
    metavar="KEY",
    help="The integration key of a PagerDuty service's Events API v2 integration "
    "(--format pagerduty only).",
)
@click.option("--name", help="A label for the webhook.")
@json_option
@remote
def webhooks_add(
    client: Client,
    endpoint: str,
    events: tuple[str, ...],
    format_: str,
    routing_key: str | None,
    name: str | None,
    as_json: bool,
) -> None:
    """Register a webhook at URL and print it (a standard one's secret, this once).

    \b
    agentguard webhooks add https://hooks.example.com/agentguard
    agentguard webhooks add https://hooks.slack.com/services/T/B/X --format slack --event kill
    agentguard webhooks add https://events.pagerduty.com/v2/enqueue --format pagerduty \\
        --routing-key R0... --event kill --event revive
    """
    if format_ == "pagerduty" and routing_key is None:
        raise click.UsageError("--format pagerduty needs --routing-key")
    if format_ != "pagerduty" and routing_key is not None:
        raise click.UsageError("--routing-key goes with --format pagerduty")
    chosen = list(events) or list(WEBHOOK_EVENTS)
    try:
        created = client.create_webhook(
            endpoint, chosen, format=format_, name=name, routing_key=routing_key
        )
    except InvalidInputError as exc:
        if exc.field != "url":
            raise
        # The webhook's URL is the argument URL here, not the connection option --url.
        raise click.BadParameter(exc.message, param_hint="'URL'") from None
    if as_json:
        out.echo_json(created)
        return
    click.echo(f"added {created.id} ({created.format}; {', '.join(created.events)}) for {endpoint}")
    if created.secret:
        click.echo("its signing secret is shown only this once:")
        click.echo(created.secret)


@webhooks.command("list")
@limit_option
@skip_option
@json_option
@remote
def webhooks_list(client: Client, limit: int, skip: int, as_json: bool) -> None:
    """List the organization's webhooks, newest first, and how their deliveries are going."""
    page = client.webhooks(skip=skip, limit=limit)
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.webhooks(page.data, page.count))


@webhooks.command("test")
@click.argument("webhook_id", metavar="ID")
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=Seconds(0, 600),
    help="Seconds to wait for the first attempt.",
)
@json_option
@remote
def webhooks_test(client: Client, webhook_id: str, timeout: float, as_json: bool) -> None:
    """Send a webhook.test event to one webhook and wait for its first attempt.

    Exit code 1 if it was not delivered (the server keeps retrying it), 3 if there is no
    such webhook.
    """
    queued = client.test_webhook(webhook_id)
    delivery = _first_attempt(client, webhook_id, queued, timeout)
    if as_json:
        out.echo_json(delivery)
    if delivery.status == "delivered":
        if not as_json:
            took = f" in {delivery.duration_ms:.0f} ms" if delivery.duration_ms else ""
            click.echo(
                f"delivered {delivery.event_id} to {webhook_id}: answered "
                f"{delivery.response_status}{took}"
            )
        return
    if delivery.attempts == 0:
        raise click.ClickException(
            f"{delivery.event_id} was not attempted within {timeout:g} s; is a server "
            "running to send it? (see: agentguard webhooks deliveries " + webhook_id + ")"
        )
    raise click.ClickException(
        f"{delivery.event_id} was not delivered to {webhook_id}: {delivery.error}; "
        f"the server retries it (see: agentguard webhooks deliveries {webhook_id})"
    )


def _first_attempt(
    client: Client, webhook_id: str, queued: WebhookDelivery, timeout: float
) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    delivery = queued
    while True:
        page = client.webhook_deliveries(webhook_id, event_id=queued.event_id, limit=1)
        if page.data:
            delivery = page.data[0]
        if delivery.attempts > 0 or time.monotonic() >= deadline:
            return delivery
        time.sleep(0.1)


@webhooks.command("remove")
@click.argument("webhook_id", metavar="ID")
@json_option
@remote
def webhooks_remove(client: Client, webhook_id: str, as_json: bool) -> None:
    """Remove a webhook and its delivery log; exit code 3 if there is no such webhook."""
    removed = client.delete_webhook(webhook_id)
    if as_json:
        out.echo_json(removed)
    else:
        click.echo(f"removed {removed.id} ({removed.url})")


@webhooks.command("deliveries")
@click.argument("webhook_id", metavar="ID")
@click.option(
    "--status",
    type=click.Choice(("pending", "delivered", "failed")),
    help="Only deliveries in this state (failed: given up).",
)
@limit_option
@skip_option
@json_option
@remote
def webhooks_deliveries(
    client: Client, webhook_id: str, status: str | None, limit: int, skip: int, as_json: bool
) -> None:
    """A webhook's delivery log, newest first: every event, its attempts, the last error."""
    page = client.webhook_deliveries(webhook_id, status=status, skip=skip, limit=limit)
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.deliveries(page.data, page.count))


COMMANDS = (webhooks,)
