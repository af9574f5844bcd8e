"""Exceptions and warnings raised by agentguard."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class AgentGuardError(Exception):
    """Base class of every agentguard error."""


class AgentGuardWarning(UserWarning):
    """Base class of agentguard warnings (fail-open decisions, dropped telemetry)."""


class InvalidInputError(AgentGuardError, ValueError):
    """Input rejected by validation; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AuthenticationError(AgentGuardError):
    """The server did not accept the credentials (HTTP 401)."""


class PermissionDeniedError(AgentGuardError):
    """The credentials lack the scope for this operation (HTTP 403)."""


class GuardNotConfiguredError(AgentGuardError, RuntimeError):
    """A module-level guarded action ran before ``agentguard.configure(guard)``."""


class AlreadyKilledError(AgentGuardError):
    """The target already has an active kill switch (HTTP 409)."""

    def __init__(self, kill_switch: Any) -> None:
        self.kill_switch = kill_switch
        ks = kill_switch
        super().__init__(
            f"{ks.target_type} {ks.target_id!r} is already killed by {ks.killed_by} "
            f"at {_iso(ks.killed_at)}" + (f", reason: {ks.reason}" if ks.reason else "")
        )


class NotKilledError(AgentGuardError):
    """The target has no active kill switch to revive (HTTP 404)."""

    def __init__(self, target_type: str, target_id: str) -> None:
        self.target_type = target_type
        self.target_id = target_id
        super().__init__(f"{target_type} {target_id!r} is not killed")


class RevivePendingError(AgentGuardError):
    """The server made a revive a request that other people must approve (HTTP 202): the
    kill stays for now. ``request`` is the revive request (its ``id`` to approve)."""

    def __init__(self, request: Any) -> None:
        self.request = request
        super().__init__(
            f"the revive of {request.target_type} {request.target_id!r} needs approval: "
            f"revive request {request.id} waits for {request.people_required - 1} other "
            f"{'person' if request.people_required == 2 else 'people'} to approve it"
        )


class PolicyViolationError(AgentGuardError):
    """A guarded action was refused (its body never ran), or stopped by a kill while it ran.

    ``ran_for`` is None for a refusal; for a call stopped in flight, the seconds it had run.
    """

    def __init__(
        self,
        *,
        target_type: str,
        target_id: str,
        reason: str | None,
        killed_by: str | None,
        killed_at: datetime | None,
        action: str,
        intervention_id: str,
        kill_switch_id: str | None = None,
        killed: bool = True,
        ran_for: float | None = None,
    ) -> None:
        self.target_type = target_type
        self.target_id = target_id
        self.reason = reason
        self.killed_by = killed_by
        self.killed_at = killed_at
        self.action = action
        self.intervention_id = intervention_id
        self.kill_switch_id = kill_switch_id
        self.killed = killed
        self.ran_for = ran_for
        super().__init__(self._message())

    @property
    def cancelled(self) -> bool:
        """Whether the call was stopped while running (not refused before it ran)."""
        return self.ran_for is not None

    def _message(self) -> str:
        if not self.killed:  # refused without a kill: stale, never-synced or unreachable
            return f"{self.action!r} refused: {self.reason} [intervention {self.intervention_id}]"
        what = "refused" if self.ran_for is None else f"stopped after {_seconds(self.ran_for)}"
        return (
            f"{self.action!r} {what}: {self.target_type} {self.target_id!r} was killed"
            + (f" by {self.killed_by}" if self.killed_by else "")
            + f" at {_iso(self.killed_at)}"
            f" — reason: {self.reason or '(none given)'} [intervention {self.intervention_id}]"
        )

    def __reduce__(self) -> Any:
        return (_rebuild_violation, (self.__dict__.copy(),))


class KillStateUnavailableError(PolicyViolationError):
    """Refused without a kill: the guard has no current kill state (never synced, stale, or
    the server could not be asked) and ``fail_mode`` is ``"closed"``.

    A ``PolicyViolationError``, so handlers of refusals still stop; recorded as an
    ``UNAVAILABLE`` intervention, not a kill's ``HARD_BLOCK``. ``killed`` is False.
    """


def _rebuild_violation(state: dict[str, Any]) -> PolicyViolationError:
    fields = {k: v for k, v in state.items() if not k.startswith("_")}
    cls = PolicyViolationError if fields.get("killed", True) else KillStateUnavailableError
    return cls(**fields)


def _seconds(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:,.0f} s"


def _iso(when: datetime | None) -> str:
    return when.isoformat().replace("+00:00", "Z") if when else "an unknown time"
