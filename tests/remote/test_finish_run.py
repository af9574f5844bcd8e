"""``guard.finish_run()`` from a remote guard: the run's kill made until it ends ends."""

from __future__ import annotations

import httpx

from agentguard import Guard, PolicyViolationError, scope
from support import eventually
from support.api import bearer
from support.live import Live


def test_a_remote_guard_finishing_its_run_ends_the_runs_kill(live: Live) -> None:
    guard = Guard(live.url, api_key=live.agent, agent_id="bot", max_staleness=30)
    try:
        assert guard.wait_until_synced(5)
        kill = {"target_type": "run", "target_id": "run-1", "until": "run_end"}
        assert live.post("/kill-switch/kill", **kill).status_code == 200

        def refused() -> bool:
            with scope(run_id="run-1"):
                try:
                    guard.enforce("send")
                except PolicyViolationError:
                    return True
            return False

        eventually(refused, 5)
        with scope(run_id="run-1"):
            ended = guard.finish_run()
        assert ended is not None and ended.revived_by is not None and not ended.is_active
        assert not refused()  # applied at once from the answer, not only from the stream
        assert guard.finish_run("run-1") is None
        audit = httpx.get(
            f"{live.url}/api/v1/audit", params={"action": "revive"}, headers=bearer(live.admin)
        ).json()["data"]
        assert audit[0]["detail"] == "ended with run 'run-1': finished"
    finally:
        guard.close()
