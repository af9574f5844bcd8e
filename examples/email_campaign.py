"""The runaway email agent, stopped and resumed.

Three worker threads send 50,000 emails in batches of 100 to an in-memory sink. After about
2,000 emails an operator kills the agent; every worker's next guarded call is refused. The
script prints what ran and what was stopped, from agentguard's own counts, checks them against
the sink, revives the agent, and lets fresh workers resume from the checkpoint until every
email has been delivered exactly once. It exits non-zero if any number disagrees.

    python examples/email_campaign.py
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

from agentguard import Guard, PolicyViolationError, scope

TOTAL_EMAILS = 50_000
BATCH = 100
WORKERS = 3
KILL_AFTER = 2_000
AGENT = "email-campaign"

started = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - started:6.3f}s] {message}", flush=True)


class Sink:
    """Stands in for the mail provider: counts each delivery of each email id."""

    def __init__(self) -> None:
        self.deliveries: Counter[int] = Counter()
        self._lock = threading.Lock()

    def deliver(self, email_ids: range) -> None:
        with self._lock:
            self.deliveries.update(email_ids)

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(self.deliveries.values())


class Checkpoint:
    """The batches already delivered: what a resumed worker skips."""

    def __init__(self) -> None:
        self.done: set[int] = set()
        self._lock = threading.Lock()
        self._next = 0

    def claim(self) -> int | None:
        with self._lock:
            while self._next < TOTAL_EMAILS // BATCH and self._next in self.done:
                self._next += 1
            if self._next >= TOTAL_EMAILS // BATCH:
                return None
            batch, self._next = self._next, self._next + 1
            return batch

    def complete(self, batch: int) -> None:
        with self._lock:
            self.done.add(batch)

    def release(self, batch: int) -> None:
        """A refused batch goes back to the pool for the resumed run."""
        with self._lock:
            self._next = min(self._next, batch)

    def rewind(self) -> None:
        with self._lock:
            self._next = 0


guard = Guard(actor="usr_ops")
sink = Sink()
checkpoint = Checkpoint()


@guard.guarded_action(name="send_email_batch")
def send_email_batch(batch: int) -> None:
    first = batch * BATCH
    sink.deliver(range(first, first + BATCH))
    time.sleep(0.001)  # the provider's latency


def worker(run_id: str, stopped: list[str]) -> None:
    with scope(agent_id=AGENT, run_id=run_id):
        while (batch := checkpoint.claim()) is not None:
            try:
                send_email_batch(batch)
            except PolicyViolationError as refused:
                checkpoint.release(batch)
                stopped.append(str(refused))
                return
            checkpoint.complete(batch)


def start_workers(phase: str) -> tuple[list[threading.Thread], list[str]]:
    """Start the workers of one run; returns them and the refusals they will collect."""
    stopped: list[str] = []
    threads = [
        threading.Thread(target=worker, args=(f"{phase}-{i}", stopped), name=f"worker-{i}")
        for i in range(WORKERS)
    ]
    for t in threads:
        t.start()
    return threads, stopped


def main() -> int:
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)
            log(f"MISMATCH: {what}")

    log(f"Agent started: {TOTAL_EMAILS:,} emails in batches of {BATCH}, {WORKERS} workers")
    threads, stopped = start_workers("run-1")
    while sink.sent < KILL_AFTER:
        time.sleep(0.0005)
    ks = guard.kill("agent", AGENT, reason="Email template has a broken link", actor="usr_ops")
    log(f"Operator usr_ops killed agent {AGENT!r}: {ks.reason}")
    for t in threads:
        t.join()

    counts = guard.counts("agent", AGENT)
    sent = sink.sent
    blocked = guard.interventions(target_id=AGENT)
    log(
        f"All {WORKERS} workers halted. {sent:,} emails sent. "
        f"{TOTAL_EMAILS - sent:,} stopped."
    )
    log(
        f"agentguard counted {counts.executed} batches executed ({counts.executed * BATCH:,} "
        f"emails), {counts.refused} calls refused, {len(blocked)} HARD_BLOCK interventions"
    )
    expect(counts.executed * BATCH == sent, "agentguard's executed count equals the sink's")
    expect(counts.refused == len(stopped) == WORKERS, "each worker was refused exactly once")
    expect(len(blocked) == counts.refused, "every refusal was recorded as an intervention")
    expect(all(iv.killed_by == "usr_ops" for iv in blocked), "interventions name the killer")
    expect(len(checkpoint.done) * BATCH == sent, "the checkpoint holds exactly what was sent")

    guard.revive("agent", AGENT, actor="usr_ops")
    log(f"Template fixed; usr_ops revived {AGENT!r}. Resuming from checkpoint "
        f"({len(checkpoint.done)} batches done).")
    checkpoint.rewind()
    threads, stopped = start_workers("run-2")
    for t in threads:
        t.join()

    total = guard.counts("agent", AGENT)
    log(
        f"Campaign finished: {sink.sent:,} emails delivered, "
        f"{total.executed} batches executed in all, {total.refused} refused."
    )
    expect(not stopped, "nothing was refused after the revive")
    expect(sink.sent == TOTAL_EMAILS, f"all {TOTAL_EMAILS:,} emails delivered")
    expect(
        set(sink.deliveries) == set(range(TOTAL_EMAILS))
        and set(sink.deliveries.values()) == {1},
        "every email delivered exactly once",
    )
    expect(total.executed * BATCH == TOTAL_EMAILS, "agentguard's count equals the sink's")
    if failures:
        log(f"FAILED: {len(failures)} check(s) disagree")
        return 1
    log("OK: every number agrees.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
