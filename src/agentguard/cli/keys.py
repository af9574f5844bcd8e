"""``keys create``, ``list`` and ``revoke``: over HTTP, or on the database to bootstrap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..client import ApiKey
from ..protocol import SCOPES
from . import output as out
from .database import open_keys
from .errors import ConflictOrNotFound, connect, database_errors
from .options import (
    DATABASE_URL_ENV,
    connection_options,
    json_option,
    limit_option,
    org_option,
    skip_option,
)


def keys_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where the keys live: the server (--url, --api-key) or the database (--database-url)."""
    f = org_option(f)
    f = click.option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="Work directly on this database instead of over HTTP (env AGENTGUARD_DATABASE_URL).",
    )(f)
    return connection_options(f)


def _keys_database(ctx: click.Context, database_url: str | None) -> str | None:
    """The database to work on directly, or ``None`` to go through the server.

    The command line wins over the environment; both places default to HTTP.
    """
    given = {
        name: ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        for name in ("database_url", "url", "api_key", "organization_id")
    }
    if given["database_url"] and (given["url"] or given["api_key"]):
        raise click.UsageError("give either --database-url or --url/--api-key, not both")
    direct = given["database_url"] or (
        database_url is not None and not (given["url"] or given["api_key"])
    )
    if not direct and given["organization_id"]:
        raise click.UsageError(
            "--org works only with --database-url; over HTTP the organization is the API key's"
        )
    return database_url if direct else None


@click.group()
def keys() -> None:
    """Create, list and revoke API keys.

    Over HTTP with an admin key, or directly on a database to bootstrap a fresh server.

    \b
    Over HTTP (needs an admin key):  agentguard keys list --url URL --api-key KEY
    On the database (bootstrapping): agentguard keys create --database-url URL --owner ...
    """


@keys.command("create")
@keys_options
@click.option("--owner", help="The user the key acts for (over HTTP: default the caller).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="Repeat for several scopes.",
)
@click.option("--name", default=None, help="A label for the key.")
@click.option(
    "--agent",
    "agents",
    multiple=True,
    help="An agent the (agent-scoped) key speaks for: an id, or a prefix ending in '*' "
    "('billing-*'); '*' alone for any agent. Repeat for several.",
)
@json_option
@click.pass_context
def keys_create(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    owner: str | None,
    scopes: tuple[str, ...],
    name: str | None,
    agents: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key and print its secret (shown only this once).

    An agent key writes (heartbeats, acknowledgements, interventions, checkpoints) only for
    the agents named with --agent; without any it can only check and stream the kill state.
    """
    if agents and "agent" not in scopes:
        raise click.UsageError("--agent goes with --scope agent")
    if "agent" in scopes and not agents and not {"admin", "operator"} & set(scopes):
        click.echo(
            "warning: this agent key names no --agent, so it may report for no agent "
            "(heartbeats, acknowledgements, interventions, checkpoints); "
            "add --agent ID (or --agent '*' for any agent)",
            err=True,
        )
    database = _keys_database(ctx, database_url)
    if database is not None:
        if owner is None:
            raise click.UsageError("--owner is required with --database-url")
        with database_errors():
            key, token = open_keys(database).create(
                organization_id,
                owner=owner,
                scopes=scopes,
                name=name,
                agents=agents,
                actor="agentguard keys create",
            )
        created = {**key.model_dump(mode="json"), "secret": token}
    else:
        with connect(url, api_key) as client:
            answer = client.create_key(
                list(scopes), owner=owner, name=name, agents=list(agents) or None
            )
        created = answer.model_dump(mode="json", exclude_unset=True)
    if as_json:
        out.echo_json(created)
    else:
        pure_agent = not {"admin", "operator"} & set(created["scopes"])
        speaks = out.key_agents(created["scopes"], created.get("agents")) if pure_agent else ""
        click.echo(
            f"created {created['id']} (scopes {','.join(created['scopes'])}, owner "
            f"{created['owner']}{', for ' + speaks if speaks else ''}); "
            "its secret is shown only this once:"
        )
        click.echo(created["secret"])


@keys.command("list")
@keys_options
@limit_option
@skip_option
@json_option
@click.pass_context
def keys_list(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """List the organization's keys, newest first, revoked ones included."""
    database = _keys_database(ctx, database_url)
    if database is not None:
        with database_errors():
            rows, count = open_keys(database).list(organization_id, skip=skip, limit=limit)
        data = [ApiKey.model_validate(k.model_dump()) for k in rows]
    else:
        with connect(url, api_key) as client:
            page = client.keys(skip=skip, limit=limit)
        data, count = page.data, page.count
    if as_json:
        out.echo_json({"data": [k.model_dump(mode="json") for k in data], "count": count})
    else:
        out.show(out.keys(data, count))


@keys.command("revoke")
@click.argument("key_id")
@keys_options
@json_option
@click.pass_context
def keys_revoke(
    ctx: click.Context,
    key_id: str,
    url: str,
    api_key: str | None,
    database_url: str | None,
    organization_id: str,
    as_json: bool,
) -> None:
    """Revoke a key at once; exit code 3 if it does not exist or is already revoked."""
    database = _keys_database(ctx, database_url)
    if database is not None:
        from ..server.store.keys import KeyNotFoundError, KeyRevokedError

        with database_errors():
            try:
                key = ApiKey.model_validate(
                    open_keys(database)
                    .revoke(organization_id, key_id, actor="agentguard keys revoke")
                    .model_dump()
                )
            except (KeyNotFoundError, KeyRevokedError) as exc:
                raise ConflictOrNotFound(str(exc)) from None
    else:
        with connect(url, api_key) as client:
            key = client.revoke_key(key_id)
    if as_json:
        out.echo_json(key)
    else:
        click.echo(f"revoked {key.id}")


COMMANDS = (keys,)
