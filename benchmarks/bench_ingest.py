"""Intervention ingest: ``POST /api/v1/interventions`` throughput over loopback.

A uvicorn server process (one worker) on SQLite or PostgreSQL; client threads (each its own
keep-alive connection, an ``agent``-scope key) post pre-built batches of 100 or 1,000 HARD_BLOCK
interventions with unique ids, as refusing guards do. Reported: interventions stored per second
(wall time of the whole run), batches per second, and each batch's latency. Every answer is
checked (200, every intervention new) and the stored count is read back at the end.

    python benchmarks/bench_ingest.py                          # both backends, both batch sizes
    python benchmarks/bench_ingest.py --backends sqlite --batch-sizes 1000 --total 20000

For PostgreSQL a scratch database is created on ``AGENTGUARD_BENCH_PG`` (see bench_server.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from _server import uvicorn
from bench_server import database

from agentguard.server import KillSwitchServer

# Proposed target (the issue names none): a kill of an agent with 50 instances, each refusing
# 100 calls a second, makes 5,000 interventions a second; one server process must keep up
# with batches of 1,000 while each batch returns well within the guards' 1 s batching interval.
TARGET_PER_SECOND = 5_000
TARGET_P99_MS = 1_000.0


@dataclass
class Result:
    backend: str
    batch: int
    clients: int
    interventions: int
    seconds: float
    per_second: float
    batches_per_second: float
    p50_ms: float
    p99_ms: float


def batches(total: int, size: int) -> list[bytes]:
    """``total`` interventions with unique ids, as JSON bodies of ``size`` each."""
    start = datetime(2026, 4, 18, 17, 0, tzinfo=timezone.utc)
    bodies = []
    for b in range(total // size):
        items = [
            {
                "id": uuid.uuid4().hex,
                "type": "HARD_BLOCK",
                "action": "send_email",
                "target_type": "agent",
                "target_id": "email-campaign",
                "kill_switch_id": "9f3c2b1e-0000-4000-8000-000000000001",
                "killed_by": "usr_abc",
                "reason": "Broken link in template",
                "agent_id": "email-campaign",
                "run_id": f"run-{b % 7}",
                "instance_id": f"host-{b % 50}-1234-abcdef12",
                "occurred_at": (start + timedelta(microseconds=b * size + i)).isoformat(),
            }
            for i in range(size)
        ]
        bodies.append(json.dumps({"interventions": items}).encode())
    return bodies


def post_all(base: str, token: str, bodies: list[bytes], latencies: list[float]) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for body in bodies:
            started = time.perf_counter()
            response = client.post("/api/v1/interventions", content=body)
            latencies.append((time.perf_counter() - started) * 1000)
            answer = response.json()
            if response.status_code != 200 or answer["created"] != answer["received"]:
                raise RuntimeError(f"ingest failed: {response.status_code} {answer}")


def measure(backend: str, size: int, clients: int, total: int) -> Result:
    with database(backend) as url:
        setup = KillSwitchServer(url)
        try:
            token = setup.create_key("org_bench", owner="bench", scopes=["agent"], agents=["*"])
            reader = setup.create_key("org_bench", owner="bench", scopes=["read"])
        finally:
            setup.close()
        warmup, bodies = batches(size * 2, size), batches(total, size)
        with uvicorn(url, 1) as base:
            post_all(base, token, warmup, [])
            shares = [bodies[i::clients] for i in range(clients)]
            latencies: list[list[float]] = [[] for _ in range(clients)]
            errors: list[Exception] = []

            def run(i: int) -> None:
                try:
                    post_all(base, token, shares[i], latencies[i])
                except Exception as exc:  # reported below, after the others finish
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
            if errors:
                raise errors[0]
            stored = httpx.get(
                f"{base}/api/v1/interventions",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {reader}"},
            ).json()["count"]
    sent = len(bodies) * size
    if stored != sent + len(warmup) * size:
        raise RuntimeError(f"stored {stored}, sent {sent + len(warmup) * size}")
    every = sorted(x for part in latencies for x in part)
    return Result(
        backend,
        size,
        clients,
        sent,
        seconds,
        sent / seconds,
        len(bodies) / seconds,
        statistics.median(every),
        every[min(len(every) - 1, int(len(every) * 0.99))],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--total", type=int, default=50_000, help="interventions per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()

    results = [
        measure(backend, size, clients, args.total)
        for backend in args.backends
        for size in args.batch_sizes
        for clients in args.clients
    ]
    lines = [
        f"POST /api/v1/interventions, {args.total:,} interventions per run, 1 uvicorn worker, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        "| backend | batch | clients | interventions/s | batches/s | p50 ms | p99 ms | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = ""
        if r.batch == 1000:
            met = r.per_second >= TARGET_PER_SECOND and r.p99_ms <= TARGET_P99_MS
            verdict = "met" if met else "MISSED"
        lines.append(
            f"| {r.backend} | {r.batch:,} | {r.clients} | {r.per_second:,.0f} | "
            f"{r.batches_per_second:,.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {verdict} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.update:
        from _report import write_section

        write_section(
            "bench_ingest",
            "## Intervention ingest: POST /api/v1/interventions\n\n"
            "`python benchmarks/bench_ingest.py --update` — one uvicorn worker on 127.0.0.1; "
            "client threads, each with its own keep-alive connection and an `agent`-scope key, "
            "post pre-built batches of HARD_BLOCK interventions with unique ids (as refusing "
            "guards do, every ~1 s); every answer checked (all new) and the stored count read "
            "back. interventions/s is over the wall time of the whole run; latency is per batch. "
            f"Target (proposed: 50 instances refusing 100 calls/s each): >= "
            f"{TARGET_PER_SECOND:,} interventions/s with batches of 1,000, p99 <= "
            f"{TARGET_P99_MS:,.0f} ms.\n\n" + table,
        )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
