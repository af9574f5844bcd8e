"""The ``agentguard`` command: serve the API, manage API keys, upgrade the database.

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict or not found. Commands are a click group;
more attach with ``@main.command()`` or ``main.add_command``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import click
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError('the agentguard command needs click: pip install "agentguard[cli]"') from exc

from ._version import __version__
from .errors import AgentGuardError, InvalidInputError

EXIT_CONFLICT = 3
DEFAULT_DATABASE_URL = "sqlite:///agentguard.db"
SCOPE_NAMES = ("admin", "operator", "agent", "read")


class ConflictError(click.ClickException):
    """A conflict or a missing record: exit code 3."""

    exit_code = EXIT_CONFLICT


database_option = click.option(
    "--database-url",
    envvar="AGENTGUARD_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="sqlite:///path or postgresql://... (env AGENTGUARD_DATABASE_URL).",
)
org_option = click.option(
    "--org", "organization_id", default="default", show_default=True, help="Organization id."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentguard")
def main() -> None:
    """agentguard: an embeddable kill switch for AI agents."""


@contextmanager
def _errors() -> Iterator[None]:
    """Turn agentguard and database errors into click errors with the right exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except InvalidInputError as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{exc.field}'") from None
    except AgentGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {exc.__class__.__name__}: {exc}") from None


def _open_keys(database_url: str) -> Any:
    """The key store of an upgraded database."""
    from .server.database import Database
    from .server.keys import KeyStore
    from .server.sqlstore import SQLStore

    database = Database(database_url)
    database.upgrade()
    return KeyStore(SQLStore(database))


# -- serve ---------------------------------------------------------------------------------------


@main.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@org_option
def serve(
    database_url: str, host: str, port: int, workers: int, log_level: str, organization_id: str
) -> None:
    """Run the API with uvicorn. On an empty database, create an admin key and print it once."""
    import uvicorn

    from .server.asgi import DATABASE_URL_ENV

    with _errors():
        keys = _open_keys(database_url)
        if keys.count() == 0:
            key, token = keys.create(
                organization_id,
                owner="admin",
                scopes=["admin"],
                name="first admin key",
                actor="agentguard serve",
            )
            click.echo(
                f"Created the first admin key {key.id} for organization {organization_id!r}.\n"
                f"It is shown only this once; store it now:\n\n    {token}\n"
            )
            sys.stdout.flush()
    os.environ[DATABASE_URL_ENV] = database_url
    uvicorn.run(
        "agentguard.server.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


# -- keys ----------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (directly on the database)."""


@keys.command("create")
@database_option
@org_option
@click.option("--owner", required=True, help="The user the key acts for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPE_NAMES),
    help="Repeat for several scopes.",
)
@click.option("--name", default=None, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create(
    database_url: str,
    organization_id: str,
    owner: str,
    scopes: tuple[str, ...],
    name: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its secret (shown only this once)."""
    with _errors():
        store = _open_keys(database_url)
        key, token = store.create(
            organization_id, owner=owner, scopes=scopes, name=name, actor="agentguard keys create"
        )
    if as_json:
        click.echo(json.dumps({**key.model_dump(mode="json"), "secret": token}))
    else:
        click.echo(f"{key.id}  scopes={','.join(key.scopes)}  owner={key.owner}")
        click.echo(token)


@keys.command("list")
@database_option
@org_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(database_url: str, organization_id: str, as_json: bool) -> None:
    """List the organization's keys, newest first."""
    with _errors():
        store = _open_keys(database_url)
        rows, count = store.list(organization_id, limit=1000)
    if as_json:
        click.echo(json.dumps({"data": [k.model_dump(mode="json") for k in rows], "count": count}))
        return
    for k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.id}  {','.join(k.scopes):<20} {k.owner:<20} {state}  {k.name or ''}")


@keys.command("revoke")
@click.argument("key_id")
@database_option
@org_option
def keys_revoke(key_id: str, database_url: str, organization_id: str) -> None:
    """Revoke a key; exit code 3 if it does not exist or is already revoked."""
    from .server.keys import KeyNotFoundError, KeyRevokedError

    with _errors():
        store = _open_keys(database_url)
        try:
            store.revoke(organization_id, key_id, actor="agentguard keys revoke")
        except (KeyNotFoundError, KeyRevokedError) as exc:
            raise ConflictError(str(exc)) from None
    click.echo(f"revoked {key_id}")


# -- db ------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@database_option
def db_upgrade(database_url: str) -> None:
    """Apply pending migrations."""
    from .server.database import Database

    with _errors():
        database = Database(database_url)
        before = database.revision()
        database.upgrade()
        after = database.revision()
    click.echo(f"database at revision {after}" + ("" if before == after else f" (was {before})"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
