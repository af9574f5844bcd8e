"""Per-call cost of the guard against what a team would otherwise write, measured in one run.

One real server process (uvicorn, SQLite in a temporary directory) holds ``--unrelated`` active
kills of other targets. In this one process, one alternative at a time, an allowed call of a
trivial function is timed under each way of asking "is this agent killed?", and without any:

- agentguard: a local ``Guard()`` (in-process store, the same unrelated kills), and remote guards
  connected to the server in ``stream`` mode (SSE), ``poll`` mode (1 s, ETag) and ``strict`` mode
  (``GET /check`` per target of every call);
- written by hand with a keep-alive ``httpx.Client``: a ``GET /check`` per call (the seed SDK's
  behaviour), the same check cached for 5 s (``_cached_check`` of bench_propagation.py), and a
  thread polling ``GET /state`` every second into a set that each call looks up.

Each per-call figure is the median over ``--repeats`` runs of ``--calls`` calls (in-process
checks) or ``--http-calls`` calls (checks that do a request per call), after a warm-up; the
plain call's loops are interleaved with the checked one's, and the overhead is the difference
of the medians, so it is the check's cost alone. Every call runs under ``scope(agent_id=...)``
only, so a strict guard asks about two targets (the agent and the tool name) where the
hand-written check asks about the agent alone.

What each buys is measured in the same run: a thread calls the guarded function every
``--work-ms``; a target is killed (``POST /kill``; the local guard kills in-process), at a
stratified random phase of the alternative's refresh period; the time from sending the kill to
the thread's first refused call, over ``--kills`` kills of fresh targets.

    python benchmarks/bench_alternatives.py [--calls 200000] [--http-calls 200] [--repeats 9]
        [--kills 5] [--work-ms 1] [--unrelated 1000] [--update]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from _server import uvicorn
from bench_propagation import _cached_check

from agentguard import Guard, PolicyViolationError, scope
from agentguard.server import KillSwitchServer

ORG = "org_bench"
AGENT = "email-campaign"
CHECK_PATH = "/api/v1/kill-switch/check"
STATE_PATH = "/api/v1/kill-switch/state"
KILL_PATH = "/api/v1/kill-switch/kill"

Check = Callable[[str, str], bool]
Builder = Callable[[], "Alternative"]


class Killed(Exception):
    """A hand-written check refused the call."""


def send_email(i: int) -> int:
    return i


def checked(check: Check, agent_id: str) -> Callable[[int], int]:
    """``send_email`` behind a hand-written check of the agent."""

    def call(i: int) -> int:
        if check("agent", agent_id):
            raise Killed(agent_id)
        return send_email(i)

    return call


def per_call_check(url: str, key: str) -> tuple[Check, httpx.Client]:
    """A ``GET /check`` before every call on one keep-alive connection: the seed SDK."""
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})

    def check(target_type: str, target_id: str) -> bool:
        params = {"target_type": target_type, "target_id": target_id}
        return bool(client.get(CHECK_PATH, params=params).json()["is_killed"])

    return check, client


class Polling:
    """A thread fetching ``GET /state`` every ``interval`` into a set the calls look up."""

    def __init__(self, url: str, key: str, interval: float) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        self.interval = interval
        self.killed: frozenset[tuple[str, str]] = frozenset()
        self._stop = threading.Event()
        self._fetch()
        self._thread = threading.Thread(target=self._run, name="polling", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        active = self.client.get(STATE_PATH).raise_for_status().json()["active"]
        self.killed = frozenset((ks["target_type"], ks["target_id"]) for ks in active)

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            due += self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                self._fetch()
            except httpx.HTTPError:
                pass  # keep the last answer, as a hand-written loop would

    def check(self, target_type: str, target_id: str) -> bool:
        return (target_type, target_id) in self.killed

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


@dataclass
class Alternative:
    """One way of checking: how to call through it, how to kill, how long it may stay stale."""

    name: str
    asks: str  # what it asks of the server
    call_for: Callable[[str], Callable[[int], int]]  # agent id -> the checked call
    kill: Callable[[str], None]  # kills an agent
    period: float  # its refresh period: the kill lands at a random phase of it
    http_per_call: bool = False
    close: Callable[[], None] = lambda: None


@dataclass
class Row:
    alternative: Alternative
    plain_ns: float
    checked_ns: float
    refusal_ms: list[float]

    @property
    def overhead_ns(self) -> float:
        return self.checked_ns - self.plain_ns


def per_call_ns(call: Callable[[int], int], calls: int, repeats: int) -> tuple[float, float]:
    """Median per-call times of the plain function and of ``call``, their loops interleaved."""
    with scope(agent_id=AGENT):
        for i in range(max(1, calls // 10)):  # warm-up: connections, caches
            call(i)
        plain: list[float] = []
        checked: list[float] = []
        for _ in range(repeats):
            for fn, samples in ((send_email, plain), (call, checked)):
                start = time.perf_counter_ns()
                for i in range(calls):
                    fn(i)
                samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(plain), statistics.median(checked)


def call_until_refused(
    call: Callable[[int], int],
    agent_id: str,
    work: float,
    calling: threading.Event,
    outcome: list[int | BaseException | None],
) -> None:
    """Call every ``work`` seconds until refused; note when (perf_counter ns) or what failed."""
    with scope(agent_id=agent_id):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                call(0)
            except (PolicyViolationError, Killed):
                outcome.append(time.perf_counter_ns())
                return
            except BaseException as exc:  # raised again by the main thread
                outcome.append(exc)
                return
            calling.set()
            time.sleep(work)
    outcome.append(None)


def kill_to_refusal(
    alternative: Alternative, kills: int, work: float, rng: random.Random
) -> list[float]:
    """Milliseconds from sending each kill to the calling thread's first refused call."""
    latencies = []
    for trial in range(kills):
        agent_id = f"stale-{trial}-{alternative.name}"
        calling = threading.Event()
        outcome: list[int | BaseException | None] = []
        thread = threading.Thread(
            target=call_until_refused,
            args=(alternative.call_for(agent_id), agent_id, work, calling, outcome),
            name="agent",
            daemon=True,
        )
        thread.start()
        if not calling.wait(30):
            thread.join()
            raise RuntimeError(f"{alternative.name}: no allowed call ({outcome})")
        # Stratified phases: kill k of n lands in the k-th n-th of the refresh period.
        time.sleep(alternative.period * (trial + rng.random()) / kills)
        sent = time.perf_counter_ns()
        alternative.kill(agent_id)
        thread.join()
        refused = outcome[0]
        if isinstance(refused, BaseException):
            raise refused
        if refused is None:
            raise RuntimeError(f"{alternative.name}: {agent_id} was never refused")
        latencies.append((refused - sent) / 1e6)
    return latencies


def builders(url: str, agent_key: str, admin: httpx.Client, unrelated: int) -> list[Builder]:
    """The ways of checking, in table order; each is built when its turn comes."""

    def kill_over_http(agent_id: str) -> None:
        body = {"target_type": "agent", "target_id": agent_id, "reason": "benchmark"}
        admin.post(KILL_PATH, json=body).raise_for_status()

    def local() -> Alternative:
        guard = Guard()
        for i in range(unrelated):
            guard.kill(("agent", "run", "mission", "tool")[i % 4], f"unrelated-{i}")

        def kill(agent_id: str) -> None:
            guard.kill("agent", agent_id, reason="benchmark")

        call = guard.guarded_action(name="send_email")(send_email)
        return Alternative(
            "agentguard, local `Guard()`",
            "none (in-process store)",
            lambda _: call,
            kill,
            0.1,
            close=guard.close,
        )

    def remote(mode: str, asks: str, period: float) -> Builder:
        def build() -> Alternative:
            guard = Guard(url, api_key=agent_key, mode=mode, poll_interval=1.0)
            if not guard.wait_until_synced(30):
                raise RuntimeError(f"{mode}: the guard never synced with {url}")
            call = guard.guarded_action(name="send_email")(send_email)
            return Alternative(
                f"agentguard, `{mode}`",
                asks,
                lambda _: call,
                kill_over_http,
                period,
                http_per_call=mode == "strict",
                close=guard.close,
            )

        return build

    def by_hand_per_call() -> Alternative:
        check, client = per_call_check(url, agent_key)
        return Alternative(
            "by hand: `GET /check` per call (seed SDK)",
            "1 `GET /check` per call",
            lambda agent_id: checked(check, agent_id),
            kill_over_http,
            0.1,
            http_per_call=True,
            close=client.close,
        )

    def by_hand_cached() -> Alternative:
        check = _cached_check(url, agent_key, ttl=5.0)
        return Alternative(
            "by hand: `GET /check` cached 5 s",
            "1 `GET /check` per target per 5 s",
            lambda agent_id: checked(check, agent_id),
            kill_over_http,
            5.0,
        )

    def by_hand_polling() -> Alternative:
        polling = Polling(url, agent_key, 1.0)
        return Alternative(
            "by hand: `GET /state` polled every 1 s",
            "`GET /state` every 1 s (the whole state)",
            lambda agent_id: checked(polling.check, agent_id),
            kill_over_http,
            1.0,
            close=polling.close,
        )

    return [
        local,
        remote("stream", "1 SSE stream", 0.1),
        remote("poll", "`GET /state` every 1 s (304 if unchanged)", 1.0),
        remote("strict", "1 `GET /check` per target per call (2 here)", 0.1),
        by_hand_per_call,
        by_hand_cached,
        by_hand_polling,
    ]


def prepare(database_url: str, unrelated: int) -> tuple[str, str]:
    """Keys (agent, admin) and ``unrelated`` active kills of other targets."""
    server = KillSwitchServer(database_url)
    try:
        agent_key = server.create_key(ORG, owner="bench", scopes=["agent"], agents=["*"])
        admin_key = server.create_key(ORG, owner="usr_ops", scopes=["admin"])
        store = server.store
        for i in range(unrelated):
            target_type = ("agent", "run", "mission", "tool")[i % 4]
            store.kill(ORG, target_type, f"unrelated-{i}", reason=None, actor="bench")
    finally:
        server.close()
    return agent_key, admin_key


def times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def micros(ns: float) -> str:
    us = ns / 1000
    return f"{us:,.0f}" if abs(us) >= 100 else f"{us:.1f}" if abs(us) >= 10 else f"{us:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000, help="per repeat, in-process")
    parser.add_argument("--http-calls", type=int, default=200, help="per repeat, HTTP per call")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--kills", type=int, default=5, help="kills per alternative")
    parser.add_argument("--work-ms", type=float, default=1.0, help="between the agent's calls")
    parser.add_argument("--unrelated", type=int, default=1000, help="other active kills")
    parser.add_argument("--seed", type=int, default=1, help="of the kills' random phases")
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        agent_key, admin_key = prepare(database_url, args.unrelated)
        with (
            uvicorn(database_url, log=Path(tmp) / "server.log") as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as admin,
        ):
            rows = []
            for build in builders(url, agent_key, admin, args.unrelated):
                alternative = build()
                try:
                    calls = args.http_calls if alternative.http_per_call else args.calls
                    plain, checked = per_call_ns(alternative.call_for(AGENT), calls, args.repeats)
                    refusal = kill_to_refusal(alternative, args.kills, args.work_ms / 1000, rng)
                    row = Row(alternative, plain, checked, refusal)
                finally:
                    alternative.close()
                rows.append(row)
                print(
                    f"{alternative.name}: {row.checked_ns:,.0f} ns (plain {row.plain_ns:.0f} ns); "
                    "kill -> refusal "
                    f"{', '.join(f'{ms:.1f}' for ms in row.refusal_ms)} ms",
                    flush=True,
                )
    print(f"({time.monotonic() - started:.0f} s)", flush=True)

    reference = next(r for r in rows if r.alternative.name == "agentguard, `stream`")
    unit = reference.overhead_ns
    lines = [
        "| check | asks the server | plain (µs) | checked (µs) | overhead (µs) | overhead vs. "
        "agentguard `stream` | kill → first refusal, median (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "1x (reference)" if r is reference else times(r.overhead_ns / unit)
        lines.append(
            f"| {r.alternative.name} | {r.alternative.asks} | {micros(r.plain_ns)} | "
            f"{micros(r.checked_ns)} | {micros(r.overhead_ns)} | {ratio} | "
            f"{statistics.median(r.refusal_ms):,.1f} | {max(r.refusal_ms):,.1f} |"
        )
    by_name = {r.alternative.name: r for r in rows}
    summary = []
    for label, name in (
        ("a per-call HTTP check", "by hand: `GET /check` per call (seed SDK)"),
        ("a 5 s cached check", "by hand: `GET /check` cached 5 s"),
        ("1 s polling", "by hand: `GET /state` polled every 1 s"),
    ):
        r = by_name[name]
        summary.append(
            f"{label} costs **{times(r.overhead_ns / unit)}** the guard's "
            f"per-call overhead and refuses after {statistics.median(r.refusal_ms):,.0f} ms"
        )
    lines += [
        "",
        f"Against agentguard `stream` ({unit:,.0f} ns of overhead per call, refusing "
        f"{statistics.median(reference.refusal_ms):,.1f} ms after the kill): "
        + "; ".join(summary)
        + " (medians). The in-process alternatives do less per call than the guard (one "
        "look-up of the agent: no scope, no tool or run target, no counts); what they give up is "
        "in the last two columns. `strict` is the seed SDK's check made once per target of the "
        "call.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.update:
        from _report import write_section

        write_section(
            "bench_alternatives",
            "## Alternatives: per-call cost and staleness, one run\n\n"
            f"`python benchmarks/bench_alternatives.py --calls {args.calls} --http-calls "
            f"{args.http_calls} --repeats {args.repeats} --kills {args.kills}`: one server "
            f"process (uvicorn, SQLite, {args.unrelated:,} unrelated active kills) and, in one "
            "client process, one alternative at a time: the median per-call time of an allowed "
            "call of a trivial function over the repeats, checked and plain, their loops "
            "interleaved (the loop is in both, so the overhead column is the check's cost), then "
            f"{args.kills} kills of fresh agents, each sent at a stratified random phase of the "
            "alternative's refresh period while a thread calls through it every "
            f"{args.work_ms:g} ms: the time from sending `POST /kill` (the local guard: "
            "`guard.kill`) to that thread's first refused call. Calls run under "
            "`scope(agent_id=...)` only, so `strict` asks about two targets (the agent and the "
            "tool name) where the seed SDK's check asks about the agent alone. Hand-written "
            "checks use a keep-alive `httpx.Client`. Propagation to many agent processes is "
            "under Kill propagation.\n\n" + table,
        )


if __name__ == "__main__":
    main()
