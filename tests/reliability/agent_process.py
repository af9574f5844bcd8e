"""One agent process of the crash-and-restart tests (run as a script, not collected).

    python agent_process.py URL API_KEY INSTANCE_ID OUT_JSON STOP_FILE [CHECKPOINT_EVERY]

A remote guard in stream mode, heartbeating every second as an instance of agent ``bot``, runs
guarded calls in a loop until STOP_FILE exists. Each call's start (CLOCK_MONOTONIC, shared by
every process of the machine) is noted with whether it was allowed; each refusal with its
intervention id and kill switch. Before exiting, the refusals are flushed to the server and
everything is written to OUT_JSON. With CHECKPOINT_EVERY (seconds) the loop also stores a
checkpoint (key INSTANCE_ID, the number of calls so far) that often, and once more at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time

from agentguard import Guard, PolicyViolationError


def main(
    url: str, api_key: str, instance_id: str, out: str, stop_file: str, every: str = "0"
) -> int:
    # A long max_staleness: through a server crash the last known state must keep serving.
    guard = Guard(url, api_key=api_key, agent_id="bot", instance_id=instance_id, max_staleness=60)
    if not guard.wait_until_synced(30):
        print("never synced", file=sys.stderr)
        return 1
    guard.start_heartbeat(interval=1.0)

    @guard.guarded_action(name="send_email")
    def send_email() -> None:
        pass

    calls: list[tuple[int, int]] = []  # (started ns, 1 allowed / 0 refused)
    refusals: list[tuple[str, str | None, bool]] = []  # (intervention id, kill switch, killed)
    checkpoint_every = float(every)
    checkpoints = 0
    last_checkpoint = time.monotonic()
    print("ready", flush=True)
    while not os.path.exists(stop_file):
        if checkpoint_every and time.monotonic() - last_checkpoint >= checkpoint_every:
            guard.checkpoint(instance_id, {"calls": len(calls)})  # must not crash the agent
            checkpoints += 1
            last_checkpoint = time.monotonic()
        started = time.monotonic_ns()
        try:
            send_email()
        except PolicyViolationError as e:
            calls.append((started, 0))
            refusals.append((e.intervention_id, e.kill_switch_id, e.killed))
        else:
            calls.append((started, 1))
        time.sleep(0.001)
    if checkpoint_every:
        guard.checkpoint(instance_id, {"calls": len(calls)})
        checkpoints += 1
    flushed = guard.flush(60)
    counts = guard.counts("agent", "bot")
    guard.close()
    with open(out, "w") as f:
        json.dump(
            {
                "calls": calls,
                "refusals": refusals,
                "flushed": flushed,
                "executed": counts.executed,
                "refused": counts.refused,
                "checkpoints": checkpoints,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
