"""``POST /runs/{run_id}/finish``: a run is over, and its kill made ``until`` then ends."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...protocol import VERSION_HEADER
from .. import schemas as s
from ..auth.binding import AgentNotAllowedError
from ..fleet import Fleet
from ..inputs import as_public
from .call import Call


class RunHandlers:
    """Runs: their end, told by the agent running them (or an operator)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def finish(self, call: Call) -> BaseModel:
        """End the run's ``until``-run-end kill, if it has one (a kill without ``until`` stays).

        A key bound to agents may finish only a run whose instances are all of its agents
        (and that has one at least, unless the key speaks for any agent).
        """
        org, run_id = call.org, call.path.run_id
        binding = call.principal.binding
        if binding is not None:
            rows = await run_in_threadpool(self.fleet.store.instances_of_run, org, run_id)
            strangers = sorted({r.agent_id or "" for r in rows if not binding.allows(r.agent_id)})
            if strangers or not (rows or binding.allows(None)):
                whose = f"agent {strangers[0]!r}" if strangers else "no agent this key knows"
                raise AgentNotAllowedError(
                    "run_id",
                    f"run_id: run {run_id!r} is run by {whose}; "
                    f"this key speaks for {binding.speaks_for()}",
                )
        change = await run_in_threadpool(
            lambda: self.fleet.finish_run(org, run_id, actor=call.principal.actor)
        )
        if change is not None:
            call.headers[VERSION_HEADER] = str(change.version)
        ended = as_public(s.KillSwitchPublic, change.kill_switch) if change else None
        return s.RunFinishedPublic(run_id=run_id, ended=ended)
