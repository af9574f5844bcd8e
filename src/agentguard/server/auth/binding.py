"""Agent binding: the agents an ``agent`` key may speak for.

An agent key names them when it is created: exact agent ids, ``prefix-*`` (every id starting
with ``prefix-``), or ``*`` alone for any agent. Everything such a key writes for an agent
(heartbeats and the cost in them, acknowledgements, the identity a stream announces,
interventions, checkpoints) is accepted only for those agents; only ``*`` also speaks for
reports that name no agent. Checkpoints live in a namespace of the key's agents (``*``: the
organization's own). Keys with the ``operator`` or ``admin`` scope speak for every agent, as
before. A key that names no agents (an agent key made
before bindings existed, or made without any) speaks for none: it may still check and stream
the kill state, but writes nothing for any agent until it is re-created with agents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import AgentGuardError, InvalidInputError
from ...targets import MAX_TARGET_ID_LENGTH

ANY_AGENT = "*"
MAX_AGENTS = 100
_NAMESPACE_LENGTH = 200  # longer bindings name their checkpoint namespace by a digest


class AgentNotAllowedError(AgentGuardError):
    """A key bound to some agents wrote for another one (HTTP 403); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_agents(agents: Iterable[str]) -> list[str]:
    """The agent patterns sorted and de-duplicated, or an error naming ``agents``."""
    if isinstance(agents, str):
        raise InvalidInputError("agents", "must be a list of agent ids or patterns")
    result = sorted(set(agents))
    if len(result) > MAX_AGENTS:
        raise InvalidInputError("agents", f"at most {MAX_AGENTS} agents; got {len(result)}")
    for agent in result:
        if not isinstance(agent, str) or not agent.strip():
            raise InvalidInputError("agents", f"each must be a non-empty string; got {agent!r}")
        if len(agent) > MAX_TARGET_ID_LENGTH:
            raise InvalidInputError(
                "agents", f"each must be at most {MAX_TARGET_ID_LENGTH} characters"
            )
        if "\x00" in agent or "," in agent:
            raise InvalidInputError("agents", f"{agent!r}: must not contain NUL or commas")
        if "*" in agent[:-1]:
            raise InvalidInputError(
                "agents",
                f"{agent!r}: '*' may only end a prefix ('billing-*') or stand alone for any agent",
            )
    return result


def describe(agents: Iterable[str] | None) -> str:
    """How a key's agents read in lists: ``any agent``, ``no agent`` or the patterns."""
    patterns = list(agents or ())
    if not patterns:
        return "no agent"
    if ANY_AGENT in patterns:
        return "any agent"
    return ", ".join(patterns)


@dataclass(frozen=True)
class AgentBinding:
    """The agents one credential may speak for (``patterns`` empty: none)."""

    patterns: tuple[str, ...]

    def allows(self, agent_id: str | None) -> bool:
        """Whether the credential may speak for ``agent_id``; for none only with ``*``."""
        if not agent_id:
            return ANY_AGENT in self.patterns
        for pattern in self.patterns:
            if pattern.endswith("*"):
                if agent_id.startswith(pattern[:-1]):
                    return True
            elif agent_id == pattern:
                return True
        return False

    def require(self, field: str, agent_id: str | None) -> None:
        """Raise :class:`AgentNotAllowedError` naming ``field`` unless ``agent_id`` is allowed."""
        if self.allows(agent_id):
            return
        if not self.patterns:
            message = (
                "this key speaks for no agent (it was made without agents, or before keys "
                "named them); re-create it with --agent / agents"
            )
        elif agent_id is None:
            message = f"required: this key speaks for {self.speaks_for()}; name one of them"
        else:
            message = f"this key speaks for {self.speaks_for()}, not for {agent_id!r}"
        raise AgentNotAllowedError(field, f"{field}: {message}")

    def speaks_for(self) -> str:
        return describe(self.patterns)

    @property
    def namespace(self) -> str:
        """Where the credential's checkpoints live: never where another binding's do.

        A key for any agent shares the organization's own namespace, as operators do.
        """
        if ANY_AGENT in self.patterns:
            return ""
        joined = ",".join(self.patterns)
        if len(joined) > _NAMESPACE_LENGTH:
            joined = "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:32]
        # "/" never occurs in a checkpoint key, so no plain key can reach into a namespace.
        return f"agents={joined}/"
