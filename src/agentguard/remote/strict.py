"""Strict mode: ask the server (``GET /kill-switch/check``) before every guarded call."""

from __future__ import annotations

import logging

import httpx
from pydantic import ValidationError

from ..errors import AgentGuardError
from ..scope import Scope
from ..sources import CLEAR, Verdict
from .feed import FeedState
from .http import Client

logger = logging.getLogger("agentguard")


class StrictCheck:
    """Checks one call's mission, run, agent and tool at the server, most general first."""

    def __init__(self, client: Client, state: FeedState) -> None:
        self.client = client
        self.state = state

    def verify(self, action: str, scope: Scope) -> Verdict:
        """The first killed status, CLEAR, or None when the server could not answer."""
        targets = [
            ("mission", scope.mission_id),
            ("run", scope.run_id),
            ("agent", scope.agent_id),
            ("tool", action),
        ]
        try:
            for target_type, target_id in targets:
                if target_id is None:
                    continue
                status = self.client.check(target_type, target_id)
                if status.is_killed:
                    return status
        except (httpx.HTTPError, AgentGuardError, ValidationError) as exc:
            logger.warning("agentguard: strict check against %s failed: %s", self.client.url, exc)
            self.state.last_error = str(exc)
            return None
        return CLEAR
