"""Kill state that scales: what 1k, 10k and 100k active kills cost a guard and the server.

One server process (uvicorn, a fresh SQLite file) whose organization has N active run kills,
each with a 120-character reason (one shared reason, as kills made by one rule or one bulk
action have; the unique-reason column gives each kill its own text), written straight into
its tables. For each N:

- guard memory per kill: the index of a remote guard after it installed the snapshot as sent
  by the server (``tracemalloc`` after GC: what parsing and installing allocated and kept),
  beside what the same snapshot's full records would keep;
- time to first sync: ``Guard(url)`` (stream mode) until its first snapshot is installed;
- bytes on the wire: the stream's snapshot (identity, gzip) and a reconnection with
  ``Last-Event-ID`` ten changes back (the changes and ``resumed``), and ``/state`` (gzip)
  against ``If-None-Match`` + ``A-IM: changes`` ten changes back (226);
- the allowed path: a guarded call's overhead against a plain one with the N kills in the
  guard's index (CPU time, fastest of ``--repeats``);
- ``GET /check`` and ``GET /active`` latency (median of ``--requests``).

The machine is shared: the load average is recorded with the figures.

    python benchmarks/bench_killstate.py [--kills 1000 10000 100000] [--update]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _report import write_section  # noqa: E402
from _server import start_server, stop_server  # noqa: E402
from bench_guard import per_call_ns, sync_loop  # noqa: E402

from agentguard import Guard, scope  # noqa: E402
from agentguard.index import KillIndex  # noqa: E402
from agentguard.records import Snapshot  # noqa: E402
from agentguard.server import KillSwitchServer  # noqa: E402

ORG = "org_bench"
REASON = "Looping on the same tool call with identical arguments; stopped by the fleet rule " + (
    "loop-guard until reviewed."
)
TARGET_BYTES = 300


def seed(database_url: str, kills: int) -> str:
    """``kills`` active run kills (and their change log) in one transaction; an agent key."""
    from sqlalchemy import insert

    from agentguard.server.store.tables import kill_changes, kill_switches, org_versions

    server = KillSwitchServer(database_url)
    try:
        key = server.create_key(ORG, owner="bench", scopes=["agent", "operator"], agents=["*"])
        now = datetime.now(timezone.utc)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "organization_id": ORG,
                "target_type": "run",
                "target_id": f"run-{i:07d}",
                "reason": REASON,
                "is_active": True,
                "killed_by": "usr_ops (key ag_bench)",
                "killed_at": now - timedelta(seconds=i),
            }
            for i in range(kills)
        ]
        changes = [
            {
                "organization_id": ORG,
                "version": i + 1,
                "kind": "kill",
                "kill_switch_id": row["id"],
                "created_at": row["killed_at"],
            }
            for i, row in enumerate(rows)
        ]
        with server.database.write() as conn:
            for start in range(0, kills, 5000):
                conn.execute(insert(kill_switches), rows[start : start + 5000])
                conn.execute(insert(kill_changes), changes[start : start + 5000])
            conn.execute(insert(org_versions).values(organization_id=ORG, version=kills))
    finally:
        server.close()
    return key


def index_bytes(state_json: bytes, kills: int, *, keep_records: bool = False) -> float:
    """Bytes per kill that parsing a snapshot and installing it keeps (after GC)."""
    gc.collect()
    tracemalloc.start()
    try:
        index = KillIndex()
        snapshot = Snapshot.model_validate_json(state_json)
        index.replace(snapshot)
        kept = snapshot.active if keep_records else None
        del snapshot
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del index, kept
    return used / kills


def unique_reasons(state_json: bytes) -> bytes:
    """The same snapshot with a reason of its own for every kill (same length)."""
    snapshot = Snapshot.model_validate_json(state_json)
    active = [
        ks.model_copy(update={"reason": f"{i:07d} {REASON[8:]}"})
        for i, ks in enumerate(snapshot.active)
    ]
    return snapshot.model_copy(update={"active": active}).model_dump_json().encode()


def raw_bytes(url: str, path: str, headers: dict[str, str], *, until: bytes) -> int:
    """Bytes on the wire of a streamed answer until its decoded text contains ``until``."""
    import zlib

    with (
        httpx.Client(timeout=httpx.Timeout(30.0, read=120.0)) as client,
        client.stream("GET", f"{url}{path}", headers=headers) as response,
    ):
        gzip = response.headers.get("content-encoding") == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        total, tail = 0, b""
        for chunk in response.iter_raw():
            total += len(chunk)
            tail = (tail + (decoder.decompress(chunk) if decoder else chunk))[-4096:]
            if until in tail:
                return total
        return total


def first_sync(url: str, key: str) -> float:
    started = time.perf_counter()
    guard = Guard(url, api_key=key, start_wait=0)
    try:
        if not guard.wait_until_synced(120):
            raise RuntimeError("the guard did not sync")
        return time.perf_counter() - started
    finally:
        guard.close()


def latency_ms(url: str, path: str, key: str, params: dict[str, str], requests: int) -> float:
    times = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        client.get(f"{url}{path}", params=params)
        for _ in range(requests):
            started = time.perf_counter()
            client.get(f"{url}{path}", params=params).raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def allowed_overhead_ns(state_json: bytes, calls: int, repeats: int) -> float:
    guard = Guard()
    guard.index.replace(
        Snapshot.model_validate_json(state_json).model_copy(update={"organization_id": "local"})
    )

    @guard.guarded_action(name="send")
    def send(i: int) -> int:
        return i

    def plain(i: int) -> int:
        return i

    with scope(agent_id="bench-agent", run_id="bench-run", mission_id="bench-mission"):
        p, g = per_call_ns(sync_loop(plain), sync_loop(send), calls, repeats)
    guard.close()
    return g - p


def measure(kills: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    database_url = f"sqlite:///{workdir / f'killstate-{kills}.db'}"
    key = seed(database_url, kills)
    process, url = start_server(database_url, workdir / f"server-{kills}.log")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        state_json = httpx.get(
            f"{url}/api/v1/kill-switch/state",
            headers={**auth, "Accept-Encoding": "identity"},
            timeout=120,
        ).content
        row: dict[str, float] = {"kills": kills}
        row["index B/kill"] = index_bytes(state_json, kills)
        row["records B/kill"] = index_bytes(state_json, kills, keep_records=True)
        row["index B/kill, unique reasons"] = index_bytes(unique_reasons(state_json), kills)
        row["first sync s"] = statistics.median(first_sync(url, key) for _ in range(3))
        stream = "/api/v1/kill-switch/stream"
        row["full identity B"] = raw_bytes(
            url, stream, {**auth, "Accept-Encoding": "identity"}, until=b"]}\r\n\r\n"
        )
        row["full gzip B"] = raw_bytes(
            url, stream, {**auth, "Accept-Encoding": "gzip"}, until=b"]}\r\n\r\n"
        )
        behind = kills - 10
        row["delta stream B"] = raw_bytes(
            url,
            stream,
            {**auth, "Accept-Encoding": "gzip", "Last-Event-ID": str(behind)},
            until=b"event: resumed",
        )
        delta = httpx.get(
            f"{url}/api/v1/kill-switch/state",
            headers={**auth, "If-None-Match": f'"{behind}"', "A-IM": "changes"},
            timeout=60,
        )
        assert delta.status_code == 226, delta.status_code
        row["delta poll B"] = int(delta.headers.get("content-length", len(delta.content)))
        row["allowed ns"] = allowed_overhead_ns(state_json, args.calls, args.repeats)
        check = {"target_type": "run", "target_id": "run-0000005"}
        row["check ms"] = latency_ms(url, "/api/v1/kill-switch/check", key, check, args.requests)
        row["active ms"] = latency_ms(
            url, "/api/v1/kill-switch/active", key, {"limit": "100"}, args.requests
        )
        return row
    finally:
        stop_server(process)


async def _resync_all(
    url: str, key: str, guards: int, last_event_id: str | None
) -> tuple[float, int]:
    """``guards`` streams connecting at once (gzip): seconds until every one is current (its
    snapshot, or ``resumed``), and the bytes all of them received until then."""
    import asyncio
    import zlib

    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    until = b"]}\r\n\r\n" if last_event_id is None else b"event: resumed"
    limits = httpx.Limits(max_connections=guards + 10)
    timeout = httpx.Timeout(60.0, read=300.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one() -> int:
            path = f"{url}/api/v1/kill-switch/stream"
            async with client.stream("GET", path, headers=headers) as response:
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                total, tail = 0, b""
                async for chunk in response.aiter_raw():
                    total += len(chunk)
                    tail = (tail + decoder.decompress(chunk))[-4096:]
                    if until in tail:
                        return total
                raise RuntimeError("the stream ended before it was current")

        started = time.perf_counter()
        sizes = await asyncio.gather(*(one() for _ in range(guards)))
        return time.perf_counter() - started, sum(sizes)


def restart_resync(kills: int, guards: int, workdir: Path) -> dict[str, float]:
    """A server restart with ``guards`` stream guards: all of them resyncing at once, with
    ``Last-Event-ID`` (ten changes behind: a short outage) and without (a full snapshot)."""
    import asyncio

    database_url = f"sqlite:///{workdir / f'restart-{kills}.db'}"
    key = seed(database_url, kills)
    os.environ["AGENTGUARD_MAX_STREAMS_PER_KEY"] = str(guards + 10)
    os.environ["AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION"] = str(guards + 10)
    row: dict[str, float] = {"kills": kills, "guards": guards}
    for name, last_event_id in (("delta", str(kills - 10)), ("full", None)):
        process, url = start_server(database_url, workdir / f"restart-{name}.log")  # restarted
        try:
            seconds, received = asyncio.run(_resync_all(url, key, guards, last_event_id))
        finally:
            stop_server(process)
        row[f"{name} s"], row[f"{name} B"] = seconds, received
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--restart-guards",
        type=int,
        default=0,
        help="also: this many stream guards resyncing at once after a server restart",
    )
    parser.add_argument(
        "--restart-kills", type=int, default=10_000, help="active kills for --restart-guards"
    )
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    restart = None
    with tempfile.TemporaryDirectory() as tmp:
        for kills in args.kills:
            row = measure(kills, args, Path(tmp))
            print(row, flush=True)
            rows.append(row)
        if args.restart_guards:
            restart = restart_resync(args.restart_kills, args.restart_guards, Path(tmp))
            print(restart, flush=True)
    load_after = os.getloadavg()
    table = [
        "| active kills | guard index (B/kill) | unique reasons (B/kill) | full records "
        "(B/kill) | first sync (s) | full snapshot, identity | gzip | delta, stream | "
        "delta, poll (226) | allowed overhead (ns) | /check (ms) | /active (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {int(r['kills']):,} | {r['index B/kill']:.0f} | "
            f"{r['index B/kill, unique reasons']:.0f} | {r['records B/kill']:.0f} | "
            f"{r['first sync s']:.2f} | {_size(r['full identity B'])} | "
            f"{_size(r['full gzip B'])} | {_size(r['delta stream B'])} | "
            f"{_size(r['delta poll B'])} | {r['allowed ns']:.0f} | {r['check ms']:.1f} | "
            f"{r['active ms']:.1f} |"
        )
    biggest = rows[-1]
    verdict = "meets" if biggest["index B/kill"] <= TARGET_BYTES else "MISSES"
    body = "\n".join(
        [
            "## Kill state at scale",
            "",
            f"`python benchmarks/bench_killstate.py --kills {' '.join(map(str, args.kills))} "
            f"--calls {args.calls} --repeats {args.repeats} --requests {args.requests}`: one "
            "uvicorn process on a fresh SQLite file whose organization has N active run kills "
            "with a 120-character reason (shared; the unique-reasons column gives each its "
            "own). Guard index: what parsing the snapshot the server sent and installing it "
            "keeps, per kill (tracemalloc after GC); full records: the same with the parsed "
            "records kept (what a guard held before). First sync: `Guard(url)` in stream mode "
            "until its first snapshot is installed (median of 3). Bytes: the stream's snapshot "
            "as sent to a client taking gzip, and a reconnection ten changes behind "
            "(`Last-Event-ID`: the ten changes and `resumed`, gzip) or a poll ten changes "
            "behind (`If-None-Match` + `A-IM: changes`, 226). Allowed overhead: a guarded "
            "call against a plain one with the N kills in a local guard's index. /check and "
            "/active: median of the requests, one keep-alive client.",
            "",
            *table,
            "",
            f"At {int(biggest['kills']):,} active kills a guard keeps "
            f"**{biggest['index B/kill']:.0f} B per kill** — {verdict} the target of ≤ "
            f"{TARGET_BYTES} B (with a reason of its own per kill: "
            f"{biggest['index B/kill, unique reasons']:.0f} B, the text itself being 169 B of "
            f"it); a reconnect after a short outage moves {_size(biggest['delta stream B'])} "
            f"instead of {_size(biggest['full gzip B'])} (gzip) or "
            f"{_size(biggest['full identity B'])}.",
            *(_restart_text(restart) if restart else []),
            "",
            f"Load average (1, 5, 15 min) before: {_load(load_before)}; after: "
            f"{_load(load_after)} — two cores shared with other engineers' runs.",
        ]
    )
    print(body)
    if args.update:
        write_section("bench_killstate", body)


def _restart_text(r: dict[str, float]) -> list[str]:
    return [
        "",
        f"Server restart, `--restart-guards {int(r['guards'])} --restart-kills "
        f"{int(r['kills'])}`: {int(r['guards']):,} stream connections (one asyncio process, "
        "gzip) reach the restarted server at once. Ten changes behind (`Last-Event-ID`), all "
        f"are current after **{r['delta s']:.2f} s** having received "
        f"**{_size(r['delta B'])}** in all; asking for full snapshots, after "
        f"{r['full s']:.2f} s and {_size(r['full B'])} (each process builds and compresses "
        "the snapshot once per version).",
    ]


def _size(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f} MB"
    if n >= 1_000:
        return f"{n / 1_000:.1f} kB"
    return f"{n:.0f} B"


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
