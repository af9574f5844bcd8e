"""Kill propagation: from sending the kill to each agent process's first refused call.

A real server process and N agent processes, each running guarded calls in a loop (one call,
then ``--work-ms`` of "work", 5 ms by default: 50 busy-looping processes would otherwise saturate
a 2-core machine and measure the scheduler). The operator sends ``POST /kill``; every agent
notes when its first call was refused, and which allowed calls began after the kill response had
returned (there should be none). Times are CLOCK_MONOTONIC, shared by all processes on the machine.

The operator's HTTP client is built, connected and authenticated before the clock starts (a new
httpx client loads the CA bundle: tens of ms, none of it the kill's). Each agent stays idle
after its first refusal until every agent has reported, so the shutdowns of the agents refused
first do not compete for the CPU with the agents still being measured.

Modes: agentguard ``stream`` (SSE), ``poll`` (1 s), ``strict`` (``GET /check`` per call, the
seed SDK's behaviour), and for comparison ``cached5s``: a per-call ``/check`` cached for 5 s,
what a team would write by hand. ``stream+wait`` is stream mode with ``POST /kill?wait=5``:
the kill returns once every live instance has acknowledged it (its agents send heartbeats,
which make them live instances; the other modes' agents send none).

    python benchmarks/bench_propagation.py [--agents 10 50] [--modes stream poll strict cached5s]
        [--backend sqlite|postgres] [--replicas 1|2] [--update]

Fan-out (``--guards``): many guards per process, each with its own change stream (SSE
connection and feed thread; the process's guards share one acknowledgement thread and request),
as a fleet of small agents is. For each
size the server (``--workers``) takes one kill, and three measurements split the time:

- **delivery**: the same number of raw streams held by one asyncio process, which only note
  when the kill event's bytes arrive: the server's fan-out (and the loopback);
- **applied**: the guards (``--guard-processes`` processes), noting when each one's index
  applied the kill: delivery, plus each guard thread reading, parsing and applying the event
  while all the others in its process do the same;
- **acknowledged**: the server's own record of each guard's acknowledgement (from the kill's
  commit): applied, plus the process's ``POST /kill-switch/acks`` and its queueing at the
  server.

    python benchmarks/bench_propagation.py --guards 100 1000 3000 [--guard-processes 8]
        [--workers 2] [--backend sqlite|postgres] [--update]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _server import start_server, stop_server

HERE = Path(__file__).resolve().parent
TARGETS_MS = {10: {"p99": 50.0}, 50: {"p99": 250.0, "p50": 50.0}}


# -- the agent process ------------------------------------------------------------------------


def run_agent(url: str, key: str, mode: str, out: Path, work: float) -> None:
    from agentguard import Guard, PolicyViolationError, scope

    if mode == "cached5s":
        check = _cached_check(url, key, ttl=5.0)
    else:
        guard = Guard(
            url,
            api_key=key,
            mode=mode.split("+")[0],
            poll_interval=1.0,
            max_staleness=30,
            agent_id="email-campaign",
        )
        if not guard.wait_until_synced(30):
            raise SystemExit("agent never synced")
        if mode.endswith("+wait"):  # ?wait= waits for the live instances heartbeats register
            if guard.start_heartbeat(interval=5.0).beat() is None:
                raise SystemExit("the agent's heartbeat was not answered")

        @guard.guarded_action(name="send_email")
        def act() -> None:
            pass

    applied: list[int] = []  # when this process's index applied the kill (its reader thread)
    if mode != "cached5s":
        guard.index.watch(lambda kills: applied or applied.append(time.monotonic_ns()))
    allowed: list[int] = []
    print("ready", flush=True)
    refused_at = None
    deadline = time.monotonic() + 60
    with scope(agent_id="email-campaign"):
        while time.monotonic() < deadline:
            started = time.monotonic_ns()
            try:
                if mode == "cached5s":
                    if check("agent", "email-campaign"):
                        raise PolicyViolationError(
                            target_type="agent",
                            target_id="email-campaign",
                            reason=None,
                            killed_by=None,
                            killed_at=None,
                            action="send_email",
                            intervention_id="-",
                        )
                else:
                    act()
            except PolicyViolationError:
                refused_at = started
                break
            allowed.append(started)
            if len(allowed) > 5000:
                del allowed[:2500]
            if work:  # 0: a tight loop, which never lets go of the CPU or the GIL
                time.sleep(work)
    out.write_text(
        json.dumps(
            {
                "refused_at": refused_at,
                "applied_at": applied[0] if applied else None,
                "allowed": allowed[-2500:],
            }
        )
    )
    print("done", flush=True)
    sys.stdin.read()  # idle until the operator has heard from every agent


def _cached_check(url: str, key: str, ttl: float):  # type: ignore[no-untyped-def]
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
    cache: dict[tuple[str, str], tuple[float, bool]] = {}

    def check(target_type: str, target_id: str) -> bool:
        now = time.monotonic()
        hit = cache.get((target_type, target_id))
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        params = {"target_type": target_type, "target_id": target_id}
        try:
            response = client.get("/api/v1/kill-switch/check", params=params)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # A refresh comes 5 s after the last request, just as uvicorn (keep-alive timeout
            # 5 s) closes the idle connection: ask again on a new one, as any client must.
            response = client.get("/api/v1/kill-switch/check", params=params)
        answer = response.json()["is_killed"]
        cache[(target_type, target_id)] = (now, answer)
        return bool(answer)

    return check


# -- the operator -----------------------------------------------------------------------------


def make_postgres_database() -> str:
    import psycopg

    name = f"agentguard_bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(
    mode: str, agents: int, backend: str, replicas: int, workdir: Path, work_ms: float
) -> dict[str, object]:
    from agentguard.server import KillSwitchServer

    database_url = (
        make_postgres_database()
        if backend == "postgres"
        else f"sqlite:///{workdir / f'{mode}-{agents}-{work_ms:g}.db'}"
    )
    servers = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        keys = KillSwitchServer(database_url)
        admin = keys.create_key("org_bench", owner="usr_ops", scopes=["admin"])
        agent_key = keys.create_key("org_bench", owner="bench", scopes=["agent"], agents=["*"])
        keys.close()
        servers = [start_server(database_url, workdir / f"server-{i}.log") for i in range(replicas)]
        outs = []
        for i in range(agents):
            url = servers[i % replicas][1]
            out = workdir / f"agent-{mode}-{agents}-{i}.json"
            outs.append(out)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--agent",
                        url,
                        agent_key,
                        mode,
                        str(out),
                        str(work_ms / 1000),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p in procs:  # every agent synced and calling
            line = p.stdout.readline() if p.stdout else b""
            if line.strip() != b"ready":
                raise SystemExit(f"an agent failed to start ({mode})")
        operator = httpx.Client(
            base_url=servers[0][1], headers={"Authorization": f"Bearer {admin}"}, timeout=30
        )
        operator.get("/api/v1/kill-switch/active").raise_for_status()  # connected, key verified
        time.sleep(1.0)
        sent = time.monotonic_ns()
        wait = "?wait=5" if mode.endswith("+wait") else ""
        response = operator.post(
            f"/api/v1/kill-switch/kill{wait}",
            json={"target_type": "agent", "target_id": "email-campaign", "reason": "benchmark"},
        )
        returned = time.monotonic_ns()
        response.raise_for_status()
        acked = response.headers.get("X-AgentGuard-Acknowledged")
        if wait and acked != f"{agents}/{agents}":
            raise SystemExit(f"the kill was acknowledged by {acked} instances, not all {agents}")
        operator.close()
        for p in procs:  # every agent refused and wrote its figures
            line = p.stdout.readline() if p.stdout else b""
            if line.strip() != b"done":
                raise SystemExit(f"an agent failed ({mode})")
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            p.wait(90)
        latencies, late, applied = [], 0, []
        for out in outs:
            data = json.loads(out.read_text())
            if data["refused_at"] is None:
                raise SystemExit(f"an agent was never refused ({mode})")
            latencies.append((data["refused_at"] - sent) / 1e6)
            if data.get("applied_at") is not None:
                applied.append((data["applied_at"] - sent) / 1e6)
            late += sum(1 for t in data["allowed"] if t > returned)
        latencies.sort()
        applied.sort()
        return {
            "work_ms": work_ms,
            "applied_p50_ms": statistics.median(applied) if applied else None,
            "applied_p99_ms": _p99(applied) if applied else None,
            "mode": mode,
            "agents": agents,
            "backend": backend,
            "replicas": replicas,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))],
            "max_ms": latencies[-1],
            "kill_request_ms": (returned - sent) / 1e6,
            "calls_after_response": late,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for process, _ in servers:
            stop_server(process)
        if backend == "postgres":
            drop_postgres_database(database_url)


# -- fan-out: many guards per process ---------------------------------------------------------

FLEET = "fleet-bench"


def run_guards(url: str, key: str, count: int, first: int, out: Path) -> None:
    """A process of ``count`` stream guards; notes when each applied the kill."""
    import httpx as _httpx

    from agentguard import Guard
    from agentguard.remote import RemoteSource
    from agentguard.scope import Scope

    # One transport for the process's guards (each still opens its own stream): a client of
    # its own each would load the CA bundle a thousand times over for a plain-HTTP server.
    transport = _httpx.HTTPTransport(limits=_httpx.Limits(max_connections=None))
    applied: dict[str, int] = {}
    guards = []
    for i in range(first, first + count):
        instance = f"fanout-{i}"
        source = RemoteSource(
            url, api_key=key, transport=transport, instance_id=instance, identity=Scope(FLEET)
        )
        guard = Guard(source, start_wait=0, max_staleness=300)
        guard.index.watch(
            lambda kills, instance=instance: (
                any(k.target_id == FLEET for k in kills)
                and applied.setdefault(instance, time.monotonic_ns())
            )
        )
        guards.append(guard)
    for guard in guards:
        if not guard.wait_until_synced(120):
            raise SystemExit("a guard never synced")
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while len(applied) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    out.write_text(json.dumps(applied))
    print("done", flush=True)
    sys.stdin.read()  # stay connected (and acknowledging) until the operator has read the acks
    os._exit(0)  # no orderly close of a thousand guards: the server sees their streams end


async def raw_delivery(url: str, key: str, count: int, out: Path) -> None:
    """``count`` raw change streams in one asyncio process; notes when each got the kill."""
    host, port = url.removeprefix("http://").split(":")
    arrived: list[int] = []
    opened: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    async def one(ready: asyncio.Future[None]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /api/v1/kill-switch/stream HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            ready.set_exception(RuntimeError(head.decode(errors="replace")))
            return
        ready.set_result(None)
        seen = b""
        while FLEET.encode() not in seen:  # the kill of the fleet's agent, not the warm-up
            chunk = await reader.read(65536)
            if not chunk:
                return
            seen = seen[-64:] + chunk
        arrived.append(time.monotonic_ns())
        writer.close()

    tasks = []
    for _ in range(count):
        ready: asyncio.Future[None] = loop.create_future()
        opened.append(ready)
        tasks.append(asyncio.create_task(one(ready)))
        if len(opened) % 50 == 0:
            await asyncio.gather(*opened[-50:])
    await asyncio.gather(*opened)
    print("ready", flush=True)
    await asyncio.wait(tasks, timeout=120)
    out.write_text(json.dumps(arrived))
    print("done", flush=True)


def measure_fanout(
    total: int, processes: int, backend: str, workers: int, workdir: Path
) -> dict[str, Any]:
    from agentguard.server import KillSwitchServer

    os.environ["AGENTGUARD_MAX_STREAMS_PER_KEY"] = str(total + 100)
    os.environ["AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION"] = str(total + 100)
    row: dict[str, Any] = {"guards": total, "processes": processes, "workers": workers}
    for kind in ("delivery", "applied"):
        database_url = (
            make_postgres_database()
            if backend == "postgres"
            else f"sqlite:///{workdir / f'fanout-{total}-{kind}.db'}"
        )
        procs: list[subprocess.Popen[bytes]] = []
        server = None
        try:
            keys = KillSwitchServer(database_url)
            admin = keys.create_key("org_bench", owner="usr_ops", scopes=["admin"])
            agent_key = keys.create_key("org_bench", owner="bench", scopes=["agent"], agents=["*"])
            keys.close()
            server, url = start_server(
                database_url, workdir / f"fanout-{kind}.log", workers=workers
            )
            outs = []
            shares = [total // processes + (i < total % processes) for i in range(processes)]
            if kind == "delivery":
                shares = [total]
            first = 0
            for i, share in enumerate(shares):
                out = workdir / f"fanout-{total}-{kind}-{i}.json"
                outs.append(out)
                argv = (
                    ["--raw", url, admin, str(share), str(out)]
                    if kind == "delivery"
                    else ["--guards-process", url, agent_key, str(share), str(first), str(out)]
                )
                first += share
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, *argv],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
            for p in procs:
                if p.stdout is None or p.stdout.readline().strip() != b"ready":
                    raise SystemExit(f"a {kind} process failed to start")
            operator = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
            )
            operator.get("/api/v1/kill-switch/active").raise_for_status()
            _warm_up(operator, total if kind == "applied" else 0)
            time.sleep(2.0)  # nothing else in flight
            sent = time.monotonic_ns()
            operator.post(
                "/api/v1/kill-switch/kill",
                json={"target_type": "agent", "target_id": FLEET, "reason": "benchmark"},
            ).raise_for_status()
            row[f"{kind}_kill_request_ms"] = (time.monotonic_ns() - sent) / 1e6
            for p in procs:
                if p.stdout is None or p.stdout.readline().strip() != b"done":
                    raise SystemExit(f"a {kind} process failed")
            times: list[int] = []
            for out in outs:
                data = json.loads(out.read_text())
                times.extend(data if kind == "delivery" else data.values())
            if len(times) != total:
                raise SystemExit(f"{kind}: {len(times)} of {total} streams got the kill")
            row.update(_spread(kind, [(t - sent) / 1e6 for t in times]))
            if kind == "applied":  # the server's record of each acknowledgement, from the commit
                acks = _all_acked(operator, total)
                row.update(_spread("acked", acks))
            operator.close()
        finally:
            for p in procs:
                if p.stdin:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            if server is not None:
                stop_server(server)
            if backend == "postgres":
                drop_postgres_database(database_url)
    return row


def _warm_up(operator: httpx.Client, total: int) -> None:
    """Kill and revive a tool until ``total`` guards are live and acknowledged it (the server
    has recorded each stream's instance, and each guard has been through the path once)."""
    warm = {"target_type": "tool", "target_id": "warm-up"}
    operator.post("/api/v1/kill-switch/kill", json=warm).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        acks = operator.get("/api/v1/kill-switch/acks", params=warm).json()
        if acks["live"] >= total and acks["acknowledged"] >= total:
            break
        time.sleep(0.5)
    else:
        raise SystemExit("the guards never all acknowledged the warm-up kill")
    operator.post("/api/v1/kill-switch/revive", json=warm).raise_for_status()


def _all_acked(operator: httpx.Client, total: int) -> list[float]:
    deadline = time.monotonic() + 120
    params = {"target_type": "agent", "target_id": FLEET}
    while True:
        # Counted by their latencies: an answer read while a batch of acknowledgements commits
        # may count an instance acknowledged (its version) before its latency is readable.
        acks = operator.get("/api/v1/kill-switch/acks", params=params).json()
        latencies = [i["latency_ms"] for i in acks["instances"] if i["latency_ms"] is not None]
        if len(latencies) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(latencies) < total:
        raise SystemExit(f"only {len(latencies)} of {total} guards acknowledged")
    return latencies


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _spread(name: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        f"{name}_p50_ms": statistics.median(ordered),
        f"{name}_p99_ms": p99,
        f"{name}_max_ms": ordered[-1],
    }


FANOUT_TARGET_P99_MS = {1000: 500.0}


def client_cpu_per_event_us(rounds: int = 2000) -> float:
    """CPU a guard spends on one kill event once read: parsing it and applying it."""
    from datetime import datetime, timezone

    from agentguard.records import KillChange, KillSwitch
    from agentguard.remote.feed import FeedState
    from agentguard.remote.streaming import StreamingFeed
    from agentguard.scope import Scope

    state = FeedState("http://bench", time.monotonic)
    state.connected = True
    with httpx.Client() as unused:  # the feed reads nothing here: events are handed to it
        feed = StreamingFeed(
            state, unused, keepalive=5, auth_error_backoff=60, instance_id=None, identity=Scope()
        )
        events = [
            KillChange(
                version=version,
                kind="kill",
                kill_switch=KillSwitch(
                    id=f"ks-{version}", target_type="agent", target_id=f"agent-{version}",
                    reason="benchmark", is_active=True, killed_by="usr_ops",
                    killed_at=datetime.now(timezone.utc), organization_id="org_bench",
                ),
            ).model_dump_json()
            for version in range(1, rounds + 1)
        ]  # fmt: skip
        started = time.process_time_ns()
        for data in events:
            feed.handle("kill", data)
        return (time.process_time_ns() - started) / rounds / 1e3


def fanout_main(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for total in args.guards:
            row = measure_fanout(total, args.guard_processes, args.backend, args.workers, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    per_event = client_cpu_per_event_us()
    lines = [
        f"{args.backend}, {args.workers} uvicorn worker(s); guards in "
        f"{args.guard_processes} processes, one stream each. A guard spends about "
        f"{per_event:.0f} µs of CPU parsing and applying one kill event once read.",
        "",
        "| guards | kill request ms | delivery p50 / p99 / max ms | applied p50 / p99 / max ms "
        "| acknowledged p50 / p99 / max ms | target |",
        "|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        goal = FANOUT_TARGET_P99_MS.get(int(r["guards"]))
        target = (
            f"ack p99 <= {goal:g} ms: {'met' if r['acked_p99_ms'] <= goal else 'MISSED'}"
            if goal
            else ""
        )
        cells = [
            f"{r[f'{k}_p50_ms']:.0f} / {r[f'{k}_p99_ms']:.0f} / {r[f'{k}_max_ms']:.0f}"
            for k in ("delivery", "applied", "acked")
        ]
        lines.append(
            f"| {r['guards']:,} | {r['applied_kill_request_ms']:.0f} | {' | '.join(cells)} "
            f"| {target} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.update:
        sys.path.insert(0, str(HERE))
        from _report import write_section

        write_section(
            f"bench_propagation_fanout_{args.backend}",
            f"## Kill fan-out to many guards ({args.backend})\n\n"
            f"`python benchmarks/bench_propagation.py --guards "
            f"{' '.join(map(str, args.guards))} --guard-processes {args.guard_processes} "
            f"--workers {args.workers} --backend {args.backend}`: one kill, times from sending "
            "`POST /kill` (CLOCK_MONOTONIC) for delivery and applied; acknowledged is the "
            "server's own latency from the kill's commit to each guard's acknowledgement (one "
            "`POST /kill-switch/acks` per process for all its guards). "
            "Delivery: raw streams in one asyncio process (the server's fan-out); applied: the "
            "guards' indexes (delivery plus reading, parsing and applying in each guard's "
            "thread); acknowledged: applied plus the acknowledgements at the server.\n\n" + table,
        )


def saturated_main(args: argparse.Namespace) -> None:
    """Stream mode with many busy agent processes: where the time to the first refusal goes."""
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agents in args.agents:
            for work in args.saturated:
                row = measure("stream", agents, args.backend, 1, Path(tmp), work)
                rows.append(row)
                print(json.dumps(row), flush=True)
    load_after = os.getloadavg()
    lines = [
        f"{args.backend}, 1 uvicorn worker; load average (1 min) {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after the runs.",
        "",
        "| agent processes | loop | kill request ms | index applied p50 / p99 ms "
        "| first refusal p50 / p99 / max ms | calls begun after the kill returned |",
        "|---:|---|---:|---|---|---:|",
    ]
    for r in rows:
        loop = "tight loop" if not r["work_ms"] else f"{r['work_ms']:g} ms pauses"
        lines.append(
            f"| {r['agents']} | {loop} | {r['kill_request_ms']:.0f} "
            f"| {r['applied_p50_ms']:.0f} / {r['applied_p99_ms']:.0f} "
            f"| {r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} "
            f"| {r['calls_after_response']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.update:
        sys.path.insert(0, str(HERE))
        from _report import write_section

        write_section(
            f"bench_propagation_saturated_{args.backend}",
            f"## Kill propagation under saturation ({args.backend})\n\n"
            f"`python benchmarks/bench_propagation.py --saturated "
            f"{' '.join(f'{w:g}' for w in args.saturated)} --agents "
            f"{' '.join(map(str, args.agents))} --backend {args.backend}`: stream mode, a real "
            "server process and N agent processes looping guarded calls with the given pause "
            "between them (a tight loop: none, so each process always wants a core and holds its "
            "GIL). "
            "Times from sending `POST /kill`: the kill request itself (the server), each "
            "process's index applying the kill (its reader thread), and its first refused "
            "call. An agent goes idle once refused, so the load eases as the kill lands.\n\n"
            + table,
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--agent":
        run_agent(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]), float(sys.argv[6]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--guards-process":
        argv = sys.argv[2:]
        run_guards(argv[0], argv[1], int(argv[2]), int(argv[3]), Path(argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--raw":
        argv = sys.argv[2:]
        asyncio.run(raw_delivery(argv[0], argv[1], int(argv[2]), Path(argv[3])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", nargs="+", type=int, default=[10, 50])
    parser.add_argument(
        "--modes", nargs="+", default=["stream", "stream+wait", "poll", "strict", "cached5s"]
    )
    parser.add_argument("--work-ms", type=float, default=5.0, help="work between guarded calls")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--guards", nargs="+", type=int, help="fan-out: these numbers of guards, one kill each"
    )
    parser.add_argument("--guard-processes", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="fan-out: uvicorn workers")
    parser.add_argument(
        "--saturated",
        nargs="+",
        type=float,
        metavar="WORK_MS",
        help="saturation: stream mode, --agents processes, for each of these pauses (0: a "
        "tight loop)",
    )
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()
    if args.guards:
        fanout_main(args)
        return
    if args.saturated:
        saturated_main(args)
        return
    if args.replicas > 1 and args.backend != "postgres":
        parser.error("several replicas share one PostgreSQL: use --backend postgres")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agents in args.agents:
            for mode in args.modes:
                row = measure(mode, agents, args.backend, args.replicas, Path(tmp), args.work_ms)
                rows.append(row)
                print(json.dumps(row), flush=True)

    lines = [
        f"{args.backend}, {args.replicas} server replica(s); agents connect round-robin, the "
        "kill goes to the first replica.",
        "",
        "| mode | agents | p50 ms | p99 ms | max ms | kill request ms "
        "| calls begun after the kill returned | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = ""
        if r["mode"] == "stream" and r["agents"] in TARGETS_MS:
            goals = TARGETS_MS[int(r["agents"])]  # type: ignore[arg-type]
            ok = all(float(r[f"{k}_ms"]) <= v for k, v in goals.items())  # type: ignore[arg-type]
            spelled = ", ".join(f"{k} <= {v:g} ms" for k, v in goals.items())
            target = f"{spelled}: {'met' if ok else 'MISSED'}"
        lines.append(
            f"| {r['mode']} | {r['agents']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {r['kill_request_ms']:.1f} | {r['calls_after_response']} "
            f"| {target} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.update:
        sys.path.insert(0, str(HERE))
        from _report import write_section

        section = f"bench_propagation_{args.backend}_{args.replicas}"
        write_section(
            section,
            f"## Kill propagation ({args.backend}, {args.replicas} replica(s))\n\n"
            f"`python benchmarks/bench_propagation.py --backend {args.backend} --replicas "
            f"{args.replicas} --agents {' '.join(map(str, args.agents))} "
            f"--work-ms {args.work_ms:g}`: "
            "a real server process and N agent processes, each looping guarded calls with "
            f"{args.work_ms:g} ms of work between them; time from "
            "sending `POST /kill` to each process's first refused call (CLOCK_MONOTONIC, shared by "
            "all processes). `cached5s` is a hand-written per-call `/check` cached for 5 s; "
            "`strict` is the seed SDK's per-call `/check`; `poll` refreshes every 1 s; "
            "`stream+wait` sends "
            "`POST /kill?wait=5`, which returns once every live instance acknowledged.\n\n" + table,
        )


if __name__ == "__main__":
    main()
