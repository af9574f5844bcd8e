"""``drill``: prove that the switch is armed."""

from __future__ import annotations

import click

from ..client import Client
from . import output as out
from .options import Seconds, json_option, remote, target_type_argument


@click.command()
@target_type_argument
@click.argument("target_id", metavar="ID")
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=Seconds(0.001, 60),
    help="Seconds to wait for every live instance's answer.",
)
@json_option
@remote
def drill(client: Client, target_type: str, target_id: str, timeout: float, as_json: bool) -> None:
    """Drill a target: prove that a kill of it would reach every live instance.

    Every live instance of it (TYPE is agent, run, mission or tool) rehearses the kill on its
    kill index and answers, refusing no call. Instances answer from stream mode (the default)
    only. Exit code 1 if not every live instance answered within --timeout (or none is live).
    """
    result = client.drill(target_type, target_id, timeout=timeout)
    if as_json:
        out.echo_json(result)
    if not result.armed:
        raise click.ClickException(result.summary())
    if not as_json:
        click.echo(result.summary())


COMMANDS = (drill,)
