"""``/agents/{agent_id}/series`` and ``/series``: calls, cost, kills and revives over time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import schemas as s
from ..problems import ApiError
from ..series import MAX_EVENTS, Grid, grid_problem, seconds
from ..store.sqlstore import SQLStore
from .call import Call

_COUNTS = ("executed", "refused", "cancelled", "unavailable", "failed", "cost_usd")


class SeriesHandlers:
    """Time series of one agent and of the whole organization; ``clock`` is the fleet's."""

    def __init__(self, store: SQLStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def agent_series(self, call: Call) -> BaseModel:
        path: s.AgentPath = call.path
        answer, known = await run_in_threadpool(self._series, call.org, path.agent_id, call.query)
        if not known:
            raise ApiError(
                "not_found",
                f"agent {path.agent_id!r} has no instances, and no calls, interventions, kills "
                f"or revives in the last {call.query.window}",
                field="agent_id",
            )
        return answer

    async def org_series(self, call: Call) -> BaseModel:
        answer, _ = await run_in_threadpool(self._series, call.org, None, call.query)
        return answer

    def _series(
        self, organization_id: str, agent_id: str | None, query: s.SeriesQuery
    ) -> tuple[s.SeriesPublic, bool]:
        """The series, and whether anything is known of the agent."""
        window, step = seconds(query.window), seconds(query.step)
        problem = grid_problem(window, step)
        if problem is not None:
            raise ApiError("validation_error", f"step: {problem}", field="step")
        grid = Grid.ending_at(self.clock(), window, step)
        found = self.store.series(
            organization_id,
            agent_id,
            start=grid.start,
            end=grid.end,
            step=step,
            max_events=MAX_EVENTS,
        )
        points = []
        for index in range(grid.points):
            used = found.usage.get(index)
            stopped = found.interventions.get(index, {})
            points.append(
                s.SeriesPoint(
                    at=grid.at(index),
                    executed=used.executed if used else 0,
                    failed=used.failed if used else 0,
                    cost_usd=used.cost_usd if used else 0.0,
                    **stopped,
                )
            )
        known = bool(found.agent_seen or found.events or found.usage or found.interventions)
        totals = {name: sum(getattr(p, name) for p in points) for name in _COUNTS}
        answer = s.SeriesPublic(
            agent_id=agent_id,
            window=window,
            step=step,
            start=grid.start,
            end=grid.end,
            points=points,
            totals=s.SeriesCounts(**totals),
            events=[s.SeriesEvent.model_validate(e, from_attributes=True) for e in found.events],
            events_count=found.events_count,
        )
        return answer, known
