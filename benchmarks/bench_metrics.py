"""The cost of a Prometheus scrape: ``GET /metrics`` over loopback on a well-filled database.

A uvicorn server process (one worker) on SQLite or PostgreSQL whose organization holds
``--interventions`` interventions, ``--instances`` instances of 50 agents (a tenth heard from
just now, the rest gone for a day, as in a fleet that was never pruned), ``--kills`` of those
agents killed, and an acknowledgement of each kill from every live instance it applies to.
One client scrapes it ``--scrapes`` times on a keep-alive connection, as Prometheus does;
reported: each scrape's latency, and the same on an empty organization for comparison.
Counters are rows read in one query whatever the number of interventions; instances silent
for longer than their longest interval allows are counted in SQL, not read.

    python benchmarks/bench_metrics.py                          # both backends
    python benchmarks/bench_metrics.py --backends sqlite --instances 2000 --scrapes 100
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from _server import uvicorn
from bench_server import database
from sqlalchemy import insert

from agentguard.protocol import HeartbeatReport
from agentguard.records import Intervention, utcnow
from agentguard.scope import Scope
from agentguard.server import KillSwitchServer
from agentguard.server.store.acks import AckReport
from agentguard.server.store.instances import new_instance
from agentguard.server.store.tables import instances

ORG = "org_bench"


@dataclass
class Result:
    backend: str
    filled: bool
    p50_ms: float
    p99_ms: float


def fill(server: KillSwitchServer, *, interventions: int, instances_n: int, kills: int) -> None:
    """Interventions, instances (a tenth live), active kills and every live instance's acks."""
    store = server.store
    now = utcnow()
    for start in range(0, interventions, 1000):
        store.add_interventions(
            ORG,
            [
                Intervention(
                    id=f"iv-{n}",
                    action="send_email",
                    target_type="agent",
                    target_id=f"agent-{n % 50}",
                    occurred_at=now,
                )  # fmt: skip
                for n in range(start, min(interventions, start + 1000))
            ],
        )
    live = instances_n // 10
    gone = [
        {
            **new_instance(
                ORG, f"gone-{n}", now, now - timedelta(days=1), Scope(f"agent-{n % 50}")
            ),
            "interval_s": 10.0,
        }  # fmt: skip
        for n in range(instances_n - live)
    ]
    with server.database.write() as conn:
        for start in range(0, len(gone), 1000):
            conn.execute(insert(instances), gone[start : start + 1000])
    for n in range(live):
        store.record_heartbeat(
            ORG,
            HeartbeatReport(instance_id=f"live-{n}", agent_id=f"agent-{n % 50}", interval=10),
            now=now,
            acked_at=now,
        )
    for n in range(kills):  # an agent each: every live instance of it acknowledges the kill
        store.kill(ORG, "agent", f"agent-{n}", reason="bench", actor="bench")
    version = store.snapshot(ORG).version
    reports = [
        AckReport(ORG, f"live-{n}", version, Scope(f"agent-{n % 50}"), utcnow(), utcnow())
        for n in range(live)
    ]
    for start in range(0, len(reports), 100):
        store.record_acks(reports[start : start + 100])


def measure(backend: str, args: argparse.Namespace, filled: bool) -> Result:
    with database(backend) as url:
        setup = KillSwitchServer(url)
        try:
            token = setup.create_key(ORG, owner="prometheus", scopes=["metrics"])
            if filled:
                fill(setup, interventions=args.interventions, instances_n=args.instances,
                     kills=args.kills)  # fmt: skip
        finally:
            setup.close()
        with uvicorn(url, 1) as base, httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:  # fmt: skip
            latencies = []
            for i in range(args.scrapes + 10):  # the first 10 warm up
                started = time.perf_counter()
                answer = client.get("/metrics")
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status_code != 200 or "agentguard_database_unavailable 0.0" not in (
                    answer.text
                ):
                    raise RuntimeError(f"scrape failed: {answer.status_code} {answer.text[:300]}")
                if i >= 10:
                    latencies.append(elapsed)
            if filled and f'agentguard_interventions_total{{type="HARD_BLOCK"}} ' \
                    f"{float(args.interventions)}" not in answer.text:  # fmt: skip
                raise RuntimeError("the scrape did not count every intervention")
    latencies.sort()
    return Result(
        backend,
        filled,
        statistics.median(latencies),
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--interventions", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=50, help="agents killed (of 50)")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()

    results = [
        measure(backend, args, filled) for backend in args.backends for filled in (False, True)
    ]
    lines = [
        f"GET /metrics, {args.scrapes} scrapes on one keep-alive connection, 1 uvicorn worker, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        "| backend | organization | p50 ms | p99 ms |",
        "|---|---|---:|---:|",
    ]
    filled_text = (
        f"{args.interventions:,} interventions, {args.instances:,} instances "
        f"({args.instances // 10:,} live), {args.kills} kills"
    )
    for r in results:
        lines.append(
            f"| {r.backend} | {filled_text if r.filled else 'empty'} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.update:
        from _report import write_section

        write_section(
            "bench_metrics",
            "## Prometheus scrape: GET /metrics\n\n"
            "`python benchmarks/bench_metrics.py --update` — one uvicorn worker on 127.0.0.1, "
            "a `metrics`-scope key, scrapes one after another on a keep-alive connection (as "
            "Prometheus does), every answer checked; an empty organization, then one with "
            "interventions, a fleet of instances of which nine in ten have been gone for a day "
            "(never pruned), active kills and an acknowledgement from every live instance.\n\n"
            + table,
        )


if __name__ == "__main__":
    main()
