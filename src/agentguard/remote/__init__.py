"""The remote kill-state source: a guard fed by an agentguard server over HTTP.

``Guard("http://host:8000", api_key=...)`` builds a :class:`RemoteSource`. Laid out as
LaunchDarkly's ``impl/datasource``: one interface (:mod:`.feed`) behind the streaming and
polling feeds, and one module per job beside them:

- :mod:`.source`: ``RemoteSource``, the orchestration
- :mod:`.streaming`, :mod:`.polling`: the feeds; :mod:`.strict`: the per-call check
- :mod:`.acks`: acknowledgements; :mod:`.heartbeat`: heartbeats and the exit report
- :mod:`.http`: the HTTP API client; :mod:`.errors`: its errors
- :mod:`.backoff`: reconnection delays and bounded retries
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .source import RemoteSource

__all__ = ["RemoteSource"]


def __getattr__(name: str) -> Any:
    # Lazy: guard.py imports .heartbeat at start, and `import agentguard` stays free of httpx.
    if name == "RemoteSource":
        from .source import RemoteSource

        return RemoteSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
