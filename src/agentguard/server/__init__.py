"""The kill-switch server: a mountable Starlette app on SQLite or PostgreSQL.

```python
from agentguard.server import KillSwitchServer

server = KillSwitchServer("sqlite:///agentguard.db")
host.mount("/guard", server.app)       # API under /guard/api/v1/...
guard = agentguard.Guard(server)       # in-process, no HTTP
```
"""

from __future__ import annotations

try:
    import sqlalchemy  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'agentguard.server needs the server extra: pip install "agentguard[server]"'
    ) from exc

from .app import KillSwitchServer
from .auth.clerk import ClerkAuth
from .auth.principal import HostUserAuth, Principal
from .store.sqlstore import SQLStore
from .webhooks.sender import WebhookSettings

__all__ = [
    "ClerkAuth",
    "HostUserAuth",
    "KillSwitchServer",
    "Principal",
    "SQLStore",
    "WebhookSettings",
]
