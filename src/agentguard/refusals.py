"""The refuse path: a refused call's error, intervention, count and span (never the hot path)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

from .errors import AgentGuardWarning, KillStateUnavailableError, PolicyViolationError
from .options import FailMode
from .records import Intervention, InterventionType, KillStatus, KillSwitch, utcnow
from .rules import Trip
from .scope import LAST_REFUSAL, Scope
from .sources import CLEAR, KillStateSource
from .tally import CallTally
from .telemetry import Telemetry

logger = logging.getLogger("agentguard")


class Refusals:
    """Decides and records refusals for one guard; remembers the last one."""

    def __init__(
        self,
        source: KillStateSource,
        telemetry: Telemetry,
        tally: CallTally,
        *,
        instance_id: str,
        fail_mode: FailMode,
        max_staleness: float,
        clock: Callable[[], float],
    ) -> None:
        self._source = source
        self._recorder = source.make_recorder()
        self._telemetry = telemetry
        self._tally = tally
        self._instance_id = instance_id
        self._fail_mode = fail_mode
        self._max_staleness = max_staleness
        self._clock = clock
        self._warned_stale = False
        self.last: PolicyViolationError | None = None  # the last refusal outside any scope()

    def refuse(
        self,
        name: str,
        scope: Scope,
        ks: KillSwitch | None,
        args: Any,
        kwargs: Any,
        tool_call_id: str | None,
        span_name: str | None,
        trip: Trip | None,
        fn: Any,
        model: str | None = None,
    ) -> None:
        """Raise PolicyViolationError for a killed target, or decide on an unverified view.

        ``model`` names the model of a refused model call (its intervention records it).
        """
        if ks is not None:
            status = KillStatus.of(ks.target_type, ks.target_id, ks)
        elif trip is not None:  # a rule tripped: refuse now, the kill follows in the background
            status = KillStatus(
                is_killed=True,
                target_type=trip.target_type,
                target_id=trip.target_id,
                reason=trip.reason,
                killed_by=trip.actor,
                killed_at=utcnow(),
            )
        else:  # nothing killed in the view, but the view cannot be trusted as it is
            verdict = self._source.verify(name, scope)
            if verdict is CLEAR:
                return
            if isinstance(verdict, KillStatus):
                status = verdict
            else:
                reason = self._stale_reason()
                if self._fail_mode == "open":
                    self._warn_stale(name, reason)
                    return
                target_type, target_id = _most_specific(scope, name)
                status = KillStatus(
                    is_killed=False, target_type=target_type, target_id=target_id, reason=reason
                )
        unavailable = not status.is_killed
        iv = Intervention(
            type=InterventionType.UNAVAILABLE if unavailable else InterventionType.HARD_BLOCK,
            action=name,
            target_type=status.target_type,
            target_id=status.target_id,
            kill_switch_id=status.kill_switch_id,
            killed_by=status.killed_by,
            reason=status.reason,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            mission_id=scope.mission_id,
            instance_id=self._instance_id,
            tool_call_id=tool_call_id,
            model=model,
        )
        error = (KillStateUnavailableError if unavailable else PolicyViolationError)(
            target_type=status.target_type,
            target_id=status.target_id,
            reason=status.reason,
            killed_by=status.killed_by,
            killed_at=status.killed_at,
            action=name,
            intervention_id=iv.id,
            kill_switch_id=status.kill_switch_id if status.is_killed else None,
            killed=status.is_killed,
        )
        self._tally.count_refused((name, scope), unavailable=unavailable)
        box = LAST_REFUSAL.get()
        if box is not None:
            box[0] = error
        self.last = error
        self._recorder.submit(iv)
        arguments = self._telemetry.arguments(fn, args, kwargs)
        self._telemetry.record_block(error, iv, span_name=span_name, arguments=arguments)
        raise error

    def cancel(
        self,
        name: str,
        scope: Scope,
        ks: KillSwitch,
        ran_for: float,
        tool_call_id: str | None,
        span_name: str | None,
        model: str | None = None,
    ) -> PolicyViolationError:
        """Record a call stopped by ``ks`` after ``ran_for`` seconds (a CANCELLED intervention,
        its count and span; ``model``: a model call's); return the error it ends with."""
        iv = Intervention(
            type=InterventionType.CANCELLED,
            action=name,
            target_type=ks.target_type,
            target_id=ks.target_id,
            kill_switch_id=ks.id,
            killed_by=ks.killed_by,
            reason=ks.reason,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            mission_id=scope.mission_id,
            instance_id=self._instance_id,
            tool_call_id=tool_call_id,
            ran_for_ms=round(ran_for * 1000, 3),
            model=model,
        )
        error = PolicyViolationError(
            target_type=ks.target_type,
            target_id=ks.target_id,
            reason=ks.reason,
            killed_by=ks.killed_by,
            killed_at=ks.killed_at,
            action=name,
            intervention_id=iv.id,
            kill_switch_id=ks.id,
            ran_for=ran_for,
        )
        self._tally.count_cancelled((name, scope))
        box = LAST_REFUSAL.get()
        if box is not None:
            box[0] = error
        self.last = error
        self._recorder.submit(iv)
        self._telemetry.record_block(error, iv, span_name=span_name)
        return error

    def observe(self, trip: Trip) -> None:
        """Record an observe-mode rule's trip (a warning and an OBSERVED intervention)."""
        logger.warning(
            "agentguard: rule %s would kill %s %r: %s",
            trip.rule.name,
            trip.target_type,
            trip.target_id,
            trip.reason,
        )
        ids = {f"{trip.target_type}_id": trip.target_id}
        self._recorder.submit(
            Intervention(
                type=InterventionType.OBSERVED,
                action=trip.actor,
                target_type=trip.target_type,
                target_id=trip.target_id,
                killed_by=trip.actor,
                reason=trip.reason,
                instance_id=self._instance_id,
                agent_id=ids.get("agent_id"),
                run_id=ids.get("run_id"),
                mission_id=ids.get("mission_id"),
            )
        )

    def revived(self) -> None:
        """A revive went through: warn again the next time calls are allowed on stale state."""
        self._warned_stale = False

    def flush(self, timeout: float) -> bool:
        """Deliver queued interventions; return whether all were delivered in time."""
        return self._recorder.flush(timeout)

    def close(self) -> None:
        self._recorder.close()

    def _stale_reason(self) -> str:
        source = self._source
        where = getattr(source, "url", "the server")
        error = getattr(source, "last_error", None)
        because = f" ({error})" if error else ""
        if source.strict:
            return f"could not check kill state with {where}{because}"
        age = source.age(self._clock())
        if age == math.inf:
            return f"kill state has never been synced with {where}{because}"
        return (
            f"kill state is stale: last synced with {where} {age:.1f} s ago "
            f"(max_staleness {self._max_staleness:g} s){because}"
        )

    def _warn_stale(self, name: str, reason: str) -> None:
        logger.warning("agentguard: allowing %r with fail_mode='open': %s", name, reason)
        if not self._warned_stale:
            self._warned_stale = True
            warnings.warn(
                f"agentguard is allowing calls without current kill state (fail_mode='open'): "
                f"{reason}",
                AgentGuardWarning,
                stacklevel=4,
            )


def _most_specific(scope: Scope, name: str) -> tuple[str, str]:
    if scope.run_id:
        return "run", scope.run_id
    if scope.agent_id:
        return "agent", scope.agent_id
    if scope.mission_id:
        return "mission", scope.mission_id
    return "tool", name
