"""The runaway email agent on a real agentguard server: stopped, acknowledged and resumed.

Starts ``agentguard serve`` on a temporary SQLite file and three replica processes of one
agent guarded remotely; an operator kills the agent through the HTTP API after about 2,000
emails, checks the server's numbers against the mail sink, revives it, and the replicas resume
from their checkpoints until all 50,000 emails are delivered exactly once. The code is in
``agentguard/cli/demo.py``; it exits non-zero if any number disagrees.

    python examples/email_campaign.py
"""

import sys

from agentguard.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
