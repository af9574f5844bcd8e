"""What ``Guard(...)`` is configured with: its keyword options, checked once, and its source."""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import metrics, trace

from .errors import InvalidInputError
from .rules import Rule
from .scope import ID_FIELDS, Ids, Scope, scope_of
from .selectors import validate_labels
from .sources import KillStateSource, LocalSource
from .store import KillStore, MemoryStore
from .targets import validate_id

FailMode = Literal["closed", "open"]
URL_ENV = "AGENTGUARD_URL"
API_KEY_ENV = "AGENTGUARD_API_KEY"
AGENT_ID_ENV = "AGENTGUARD_AGENT_ID"


class GuardOptions(Ids, total=False):
    """The keyword arguments of ``Guard(...)``; :class:`Settings` holds them checked."""

    api_key: str | None
    mode: str
    poll_interval: float
    bootstrap: str | None
    organization_id: str | None
    actor: str
    fail_mode: FailMode
    max_staleness: float
    instance_id: str | None
    clock: Callable[[], float]
    tracer_provider: trace.TracerProvider | None
    meter_provider: metrics.MeterProvider | None
    capture_arguments: bool
    rules: list[Rule] | None
    start_wait: float
    labels: dict[str, str] | None


def default_instance_id() -> str:
    """An id for this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Settings:
    """A guard's options once checked, with their defaults filled in.

    ``defaults`` are the ids given to the guard (``None`` if none was); the remote options
    (``api_key``, ``mode``, ``poll_interval``, ``bootstrap``) apply only to ``Guard(url)``.
    """

    defaults: Scope | None = None
    api_key: str | None = None
    mode: str = "stream"
    poll_interval: float = 1.0
    bootstrap: str | None = None
    organization_id: str | None = None
    actor: str = "local"
    fail_mode: FailMode = "closed"
    max_staleness: float = 10.0
    instance_id: str = field(default_factory=default_instance_id)
    clock: Callable[[], float] = time.monotonic
    tracer_provider: trace.TracerProvider | None = None
    meter_provider: metrics.MeterProvider | None = None
    capture_arguments: bool = False
    rules: list[Rule] | None = None
    start_wait: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)  # what selector kills match

    @classmethod
    def of(cls, source: Any, options: GuardOptions) -> Settings:
        """Check ``Guard(source, **options)``, naming the argument at fault."""
        unknown = options.keys() - GuardOptions.__optional_keys__
        if unknown:
            raise TypeError(f"Guard() got an unexpected keyword argument {min(unknown)!r}")
        given: dict[str, Any] = {k: v for k, v in options.items() if k not in ID_FIELDS}
        _check_remote(source, given)
        for name in (*ID_FIELDS, "instance_id", "organization_id"):
            value = options.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(name, f"must be a non-empty string; got {value!r}")
        fail_mode = given.get("fail_mode", "closed")
        if fail_mode not in ("closed", "open"):
            raise InvalidInputError("fail_mode", f"must be 'closed' or 'open'; got {fail_mode!r}")
        max_staleness = given.get("max_staleness", 10.0)
        if not isinstance(max_staleness, (int, float)) or max_staleness <= 0:
            raise InvalidInputError(
                "max_staleness", f"must be a positive number; got {max_staleness!r}"
            )
        given["max_staleness"] = float(max_staleness)
        given["labels"] = validate_labels(given.get("labels"))
        defaults = scope_of({k: v for k, v in options.items() if k in ID_FIELDS}, "Guard")
        if given.get("instance_id") is None:
            given.pop("instance_id", None)
        else:
            validate_id("instance_id", given["instance_id"])
        return cls(defaults=defaults if any(defaults) else None, **given)


def from_env(options: GuardOptions) -> tuple[str, GuardOptions]:
    """The URL and options of ``Guard.from_env(**options)``."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        raise InvalidInputError(URL_ENV, "is not set: export the server's URL")
    if "api_key" not in options:
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise InvalidInputError(API_KEY_ENV, "is not set: export an agent's API key")
        options["api_key"] = key
    agent_id = os.environ.get(AGENT_ID_ENV, "").strip()
    if agent_id and "agent_id" not in options:
        options["agent_id"] = agent_id
    return url, options


def open_source(source: Any, settings: Settings) -> KillStateSource:
    """The kill-state source of ``Guard(source)``: memory, a store, a server, or a server URL."""
    organization_id = settings.organization_id
    if isinstance(source, str):
        # Imported here: `import agentguard` stays free of httpx and the HTTP client.
        from .remote import RemoteSource

        return RemoteSource(
            source,
            api_key=settings.api_key,
            mode=settings.mode,  # type: ignore[arg-type]
            poll_interval=settings.poll_interval,
            keepalive=min(5.0, settings.max_staleness / 2),
            bootstrap=settings.bootstrap,
            clock=settings.clock,
            instance_id=settings.instance_id,
            identity=settings.defaults or Scope(),
        )
    if source is None:
        return LocalSource(MemoryStore(), organization_id or "local")
    if isinstance(source, KillStateSource):
        return source
    make = getattr(source, "kill_state_source", None)
    if callable(make):  # a KillSwitchServer
        made: KillStateSource = make(organization_id or "default")
        return made
    if isinstance(source, KillStore):
        return LocalSource(source, organization_id or "default")
    raise InvalidInputError(
        "source",
        "must be None, a server URL, a KillStore or a KillSwitchServer; "
        f"got {type(source).__name__}",
    )


def _check_remote(source: Any, given: dict[str, Any]) -> None:
    """Reject remote options without a URL, and a URL without an API key."""
    start_wait = given.get("start_wait", 5.0)
    if (
        isinstance(start_wait, bool)
        or not isinstance(start_wait, (int, float))
        or not (0 <= start_wait < math.inf)
    ):
        raise InvalidInputError(
            "start_wait", f"must be a number of seconds, 0 or more; got {start_wait!r}"
        )
    api_key = given.get("api_key")
    if isinstance(source, str):
        if not source.strip():
            raise InvalidInputError("url", "must be the server's URL; got an empty string")
        if api_key is None:
            raise InvalidInputError(
                "api_key",
                f"a remote guard needs an API key: Guard({source!r}, api_key=...), "
                f"or Guard.from_env() with {API_KEY_ENV}",
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidInputError("api_key", f"must be a non-empty string; got {api_key!r}")
        return
    for name in ("api_key", "bootstrap"):
        if given.get(name) is not None:
            raise InvalidInputError(
                name,
                "is only for a remote guard: pass the server's URL first, "
                f"Guard(url, {name}=...), or use Guard.from_env() with {URL_ENV}",
            )
    mode = given.get("mode", "stream")
    if mode != "stream":
        raise InvalidInputError(
            "mode", f"is only for a remote guard (Guard(url, api_key=..., mode={mode!r}))"
        )
