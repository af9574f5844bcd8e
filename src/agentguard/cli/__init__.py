"""The ``agentguard`` command: operate kill switches from a terminal, serve the API, manage keys.

``main`` is a click group; each module here holds one group of commands (its ``COMMANDS``),
and a new one is added to the list below. Remote commands talk to the HTTP API through
:class:`agentguard.client.Client`; :mod:`.output` and :mod:`.live` print.
"""

from __future__ import annotations

try:
    import click
    import rich  # noqa: F401  (output.py and live.py print with it)
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f'the agentguard command needs {exc.name}: pip install "agentguard[cli]"'
    ) from exc

from .._version import __version__
from . import database, demo, drills, fleet, keys, killswitch, series, serve, tail, webhooks
from .errors import EXIT_CONFLICT, EXIT_ERROR, EXIT_KILLED

__all__ = ["EXIT_CONFLICT", "EXIT_ERROR", "EXIT_KILLED", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="agentguard")
def main() -> None:
    """agentguard: an embeddable kill switch for AI agents.

    \b
    Remote commands connect with --url and --api-key, or AGENTGUARD_URL and
    AGENTGUARD_API_KEY. Every read command takes --json (the API's JSON) for scripts.

    \b
    Exit codes:
      0  success
      1  error: server unreachable, credentials refused (401), scope missing (403),
         kill --wait or tail --count not done in time, a drill not armed
      2  usage: bad option or argument, or input the server rejected (the field is named)
      3  conflict or not found: already killed, not killed, unknown agent or API key
      4  check --exit-status: the target is killed

    \b
    Shell completion (click's own):
      bash  eval "$(_AGENTGUARD_COMPLETE=bash_source agentguard)"   in ~/.bashrc
      zsh   eval "$(_AGENTGUARD_COMPLETE=zsh_source agentguard)"    in ~/.zshrc
      fish  _AGENTGUARD_COMPLETE=fish_source agentguard | source     in config.fish
    """


for _module in (killswitch, drills, fleet, series, tail, serve, keys, webhooks, database, demo):
    for _command in _module.COMMANDS:
        main.add_command(_command)
