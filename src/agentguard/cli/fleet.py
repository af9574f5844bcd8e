"""``agents``, ``interventions`` and ``audit``: what the fleet did and who did what."""

from __future__ import annotations

from datetime import datetime

import click

from ..client import Client
from ..targets import TARGET_TYPES
from . import output as out
from .options import json_option, limit_option, remote, since_option, skip_option

AUDIT_ACTIONS = (
    "kill",
    "revive",
    "key.create",
    "key.revoke",
    "ack.refused",
    "rule.observed",
    "webhook.create",
    "webhook.delete",
    "revive.request",
    "revive.approve",
    "revive.reject",
    "revive.expire",
)
INTERVENTION_TYPES = ("HARD_BLOCK", "OBSERVED", "UNAVAILABLE", "CANCELLED")


@click.command()
@click.argument("agent_id", required=False)
@limit_option
@skip_option
@json_option
@remote
def agents(client: Client, agent_id: str | None, limit: int, skip: int, as_json: bool) -> None:
    """Agents and their health.

    With AGENT_ID, one agent and its instances; exit code 3 if the server does not know it.
    """
    if agent_id is not None:
        agent = client.agent(agent_id)
        if as_json:
            out.echo_json(agent)
        else:
            out.show(out.agent(agent))
        return
    page = client.agents(skip=skip, limit=limit)
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.agents(page.data, page.count))


@click.command()
@click.option("--target-type", type=click.Choice(TARGET_TYPES), help="Only this target type.")
@click.option("--target-id", help="Only this target.")
@click.option(
    "--type",
    "intervention_type",
    type=click.Choice(INTERVENTION_TYPES),
    help="Only this kind of intervention.",
)
@click.option("--action", help="Only this guarded action (tool name).")
@since_option
@limit_option
@skip_option
@json_option
@remote
def interventions(
    client: Client,
    target_type: str | None,
    target_id: str | None,
    intervention_type: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """Interventions (refused calls, and calls a kill stopped while they ran), newest first."""
    page = client.interventions(
        target_type=target_type,
        target_id=target_id,
        type=intervention_type,
        action=action,
        since=since,
        skip=skip,
        limit=limit,
    )
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.interventions(page.data, page.count))


@click.command()
@click.option("--action", type=click.Choice(AUDIT_ACTIONS), help="Only this action.")
@click.option(
    "--target-type", type=click.Choice((*TARGET_TYPES, "api_key")), help="Only this target type."
)
@click.option("--target-id", help="Only this target.")
@since_option
@limit_option
@skip_option
@json_option
@remote
def audit(
    client: Client,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """The audit log, newest first.

    Kills, revives, API keys created and revoked: who, when, and under which version.
    """
    page = client.audit(
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        skip=skip,
        limit=limit,
    )
    if as_json:
        out.echo_json(page)
    else:
        out.show(out.audit(page.data, page.count))


COMMANDS = (agents, interventions, audit)
