"""``db upgrade`` and ``db prune``: the server's database, worked on directly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ..wording import plural
from .errors import database_errors
from .options import database_option, duration_seconds, seconds_ago


def open_keys(database_url: str) -> Any:
    """The key store of an upgraded database."""
    from ..server.auth.keys import KeyStore
    from ..server.store.database import Database
    from ..server.store.sqlstore import SQLStore

    database = Database(database_url)
    database.upgrade()
    return KeyStore(database, SQLStore(database).feed)


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@database_option
def db_upgrade(database_url: str) -> None:
    """Apply pending migrations."""
    from ..server.store.database import Database

    with database_errors():
        database = Database(database_url)
        before = database.revision()
        database.upgrade()
        after = database.revision()
    click.echo(f"database at revision {after}" + ("" if before == after else f" (was {before})"))


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """A duration of at least a day: ``30d``, ``48h``."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise click.BadParameter(f"{value!r} is not a duration such as 30d or 48h")
    seconds_ago(seconds, value)  # the cut-off must be a date after the year 1
    age = timedelta(seconds=seconds)
    if age < timedelta(days=1):
        raise click.BadParameter(
            f"{value!r} is under a day; rows that recent may still be in use (server rules "
            "read usage, and a silent instance may come back)"
        )
    return age


@db.command("prune")
@database_option
@click.option(
    "--older-than",
    "age",
    required=True,
    metavar="AGE",
    callback=_age,
    help="Delete rows last touched longer ago than this: 30d, 48h (at least a day).",
)
@click.option(
    "--interventions",
    "interventions_too",
    is_flag=True,
    help="Also delete interventions received before then (they are kept by default).",
)
@click.option(
    "--change-log",
    "change_log_too",
    is_flag=True,
    help="Also delete kill-state changes older than then (guards further behind resync "
    "with a full snapshot).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def db_prune(
    database_url: str, age: timedelta, interventions_too: bool, change_log_too: bool, dry_run: bool
) -> None:
    """Delete old fleet rows, in every organization.

    Instances not seen for AGE (and their kill acknowledgements) and usage slices older than
    AGE; with --interventions also interventions; the sign-outs of console sessions that
    have expired anyway; the ids of AgentSentinel ledger entries counted before AGE (one
    sent again later counts again); and webhook deliveries (sent or given up) queued more than
    AGE ago; with --change-log also the kill-state changes older than AGE (a guard that
    reconnects from further back gets a full snapshot, not the changes it missed). Agents'
    totals then count the instances kept.
    Kill switches, the audit log and checkpoints are never deleted; how many kills have been
    active for longer than AGE is reported. One transaction: on any error nothing is deleted.
    """
    from ..server.store.database import Database
    from ..server.store.sqlstore import SQLStore

    before = datetime.now(timezone.utc) - age
    with database_errors():
        database = Database(database_url)
        database.upgrade()
        try:
            store = SQLStore(database)
            counts = store.prune(
                before,
                interventions_too=interventions_too,
                change_log_too=change_log_too,
                dry_run=dry_run,
            )
            long_active = store.kills_active_before(before)
        finally:
            database.dispose()
    verb = "would delete" if dry_run else "deleted"
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    click.echo(f"{verb} {summary} (last touched before {before:%Y-%m-%dT%H:%M:%SZ})")
    if long_active:
        click.echo(
            f"kept {plural(long_active, 'kill')} active since before then: every guard holds "
            "them; revive those whose subject is gone (a run's kill can end with the run: "
            "kill it with until run_end)"
        )


COMMANDS = (db,)
