"""``series``: an agent's (or the organization's) calls, cost, kills and revives over time."""

from __future__ import annotations

import click

from ..client import Client
from . import output as out
from .options import json_option, remote

DURATION_HELP = "a whole number and a unit, s, m, h or d"


@click.command()
@click.argument("agent_id", required=False)
@click.option(
    "--window",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help=f"How far back: {DURATION_HELP} (1m to 31d).",
)
@click.option(
    "--step",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help=f"The length of each row: {DURATION_HELP} (10s to 1d; at most 2,880 rows).",
)
@json_option
@remote
def series(client: Client, agent_id: str | None, window: str, step: str, as_json: bool) -> None:
    """Calls executed, refused and stopped, failures and cost over time, with kills and revives.

    With AGENT_ID, that agent's (exit code 3 if nothing is known of it in the window); without,
    the whole organization's. Rows are buckets of --step, oldest first, in local time; the last
    one holds the present and is still filling.
    """
    answer = client.series(agent_id, window=window, step=step)
    if as_json:
        out.echo_json(answer)
    else:
        out.show(out.series(answer))


COMMANDS = (series,)
