"""``python -m agentguard.cli``: the ``agentguard`` command."""

from . import main

main(prog_name="agentguard")
