"""The runaway email agent, on a real server: stopped, acknowledged, resumed.

``main()`` starts ``agentguard serve`` on a temporary SQLite file and three replica processes
of one agent, each guarded remotely (``Guard(url, api_key=...)``, streaming kill state) and
sending its share of 50,000 emails in batches of 100 to a sink file. After about 2,000 emails
the operator kills the agent through the HTTP API and waits for every replica to acknowledge.
It prints what was sent and what was stopped from the server's own data (heartbeats and
interventions), checks them against the sink, revives the agent, and the paused replicas
resume from their checkpoints until every email is delivered exactly once. Any disagreement
exits non-zero.

    agentguard demo        (or: make demo, python examples/email_campaign.py)

The ``demo`` command is the last thing here; the replicas are ``agentguard demo --replica N``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

TOTAL_EMAILS = 50_000
BATCH = 100
REPLICAS = 3
KILL_AFTER = 2_000
AGENT = "email-campaign"
PROVIDER_LATENCY = 0.01  # seconds per batch at the mail provider
HEARTBEAT_INTERVAL = 1.0

CLI = (sys.executable, "-m", "agentguard.cli")
_URL, _KEY, _DIR = "AGENTGUARD_DEMO_URL", "AGENTGUARD_DEMO_KEY", "AGENTGUARD_DEMO_DIR"
_started = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.3f}s] {message}", flush=True)


# -- a replica: one process of the agent -----------------------------------------------------------


def run_replica(number: int) -> int:
    """Send this replica's share of the campaign; pause on a kill, resume from the checkpoint."""
    from .. import Guard, PolicyViolationError

    url, key, workdir = os.environ[_URL], os.environ[_KEY], Path(os.environ[_DIR])
    guard = Guard(url, api_key=key, agent_id=AGENT, run_id=f"replica-{number}")
    if not guard.wait_until_synced(15):
        print(f"replica {number}: no kill state from {url}", file=sys.stderr)
        return 2
    heartbeat = guard.start_heartbeat(interval=HEARTBEAT_INTERVAL)
    checkpoint_key = f"{AGENT}.replica-{number}"
    mine = list(range(number, TOTAL_EMAILS // BATCH, REPLICAS))  # this replica's batches
    sink = (workdir / f"sink-{number}.txt").open("a")

    def deliver(batch: int) -> None:
        first = batch * BATCH
        sink.write("".join(f"{email}\n" for email in range(first, first + BATCH)))
        sink.flush()
        time.sleep(PROVIDER_LATENCY)

    send_email_batch = guard.guarded_action(name="send_email_batch")(deliver)

    while not (workdir / "go").exists():
        time.sleep(0.01)
    position = guard.load_checkpoint(checkpoint_key, {"next": 0})["next"]
    while position < len(mine):
        try:
            send_email_batch(mine[position])
        except PolicyViolationError:
            guard.flush()  # the HARD_BLOCK reaches the server now, and so do the counts:
            heartbeat.beat()
            guard.wait_until_revived()
            position = guard.load_checkpoint(checkpoint_key, {"next": 0})["next"]
            continue
        position += 1
        guard.checkpoint(checkpoint_key, {"next": position, "emails": position * BATCH})
    sink.close()
    guard.close()  # the last heartbeat reports a clean exit
    return 0


# -- the operator: server, replicas, kill, checks, revive ----------------------------------------


class Demo:
    """The operator's side: one server process, three replicas, and the checks."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.database_url = f"sqlite:///{workdir / 'agentguard.db'}"
        self.server: subprocess.Popen[bytes] | None = None
        self.replicas: list[subprocess.Popen[bytes]] = []
        self.failures: list[str] = []
        self.url = ""
        self.http: Any = None

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            log(f"MISMATCH: {what}")

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*CLI, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"agentguard {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def start_server(self) -> str:
        import json

        import httpx

        admin = json.loads(
            self.cli(
                "keys",
                "create",
                "--database-url",
                self.database_url,
                "--owner",
                "usr_ops",
                "--scope",
                "admin",
                "--name",
                "demo operator",
                "--json",
            )
        )["secret"]
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--database-url",
                self.database_url,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=(self.workdir / "server.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
        if not _until(lambda: self._serving(), 30):
            raise RuntimeError(f"the server did not start:\n{self.server_log()}")
        log(f"agentguard serve is up at {self.url} (SQLite {self.workdir / 'agentguard.db'})")
        created = self.http.post(
            "/keys",
            json={"scopes": ["agent"], "owner": AGENT, "name": "replicas", "agents": [AGENT]},
        )
        created.raise_for_status()
        return str(created.json()["secret"])

    def _serving(self) -> bool:
        assert self.server is not None
        if self.server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{self.server_log()}")
        try:
            return bool(self.http.get("/openapi.json").status_code == 200)
        except Exception:
            return False

    def server_log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def start_replicas(self, agent_key: str) -> None:
        env = {**os.environ, _URL: self.url, _KEY: agent_key, _DIR: str(self.workdir)}
        for number in range(REPLICAS):
            self.replicas.append(
                subprocess.Popen(
                    [*CLI, "demo", "--replica", str(number)],
                    env=env,
                    stderr=(self.workdir / f"replica-{number}.log").open("wb"),
                )
            )

    def agent(self) -> dict[str, Any]:
        response = self.http.get(f"/agents/{AGENT}")
        return dict(response.json()) if response.status_code == 200 else {"instances": []}

    def sink(self) -> Counter[int]:
        deliveries: Counter[int] = Counter()
        for path in self.workdir.glob("sink-*.txt"):
            deliveries.update(int(line) for line in path.read_text().split())
        return deliveries

    def sink_count(self) -> int:
        return sum(p.read_bytes().count(b"\n") for p in self.workdir.glob("sink-*.txt"))

    def blocks(self) -> int:
        params = {"target_type": "agent", "target_id": AGENT, "type": "HARD_BLOCK"}
        return int(self.http.get("/interventions", params=params).json()["count"])

    def run(self) -> int:
        agent_key = self.start_server()
        log(f"Agent {AGENT!r}: {TOTAL_EMAILS:,} emails in batches of {BATCH}, {REPLICAS} replicas")
        self.start_replicas(agent_key)
        live = _until(lambda: len(self.agent()["instances"]) == REPLICAS, 30)
        self.expect(live, f"all {REPLICAS} replicas report heartbeats")
        (self.workdir / "go").touch()
        _until(lambda: self.sink_count() >= KILL_AFTER, 30, step=0.002)

        killed = self.http.post(
            "/kill-switch/kill",
            params={"wait": 5},
            json={
                "target_type": "agent",
                "target_id": AGENT,
                "reason": "Email template has a broken link",
            },
        )
        killed.raise_for_status()
        log(
            f"Operator usr_ops killed agent {AGENT!r} through the HTTP API: "
            f"{killed.json()['reason']}"
        )
        acked = killed.headers.get("X-AgentGuard-Acknowledged")
        self.expect(acked == f"{REPLICAS}/{REPLICAS}", f"the kill was acknowledged {acked}")

        halted = _until(lambda: self.agent().get("refused") == REPLICAS, 15)
        _until(lambda: self.blocks() >= REPLICAS, 10)
        agent, sink, blocks = self.agent(), self.sink_count(), self.blocks()
        sent = agent.get("executed", 0) * BATCH
        log(
            f"All {REPLICAS} replicas halted. {sent:,} emails sent. "
            f"{TOTAL_EMAILS - sent:,} stopped."
        )
        log(
            f"The server counted (heartbeats) {agent.get('executed')} batches executed "
            f"({sent:,} emails), {agent.get('refused')} calls refused; {blocks} HARD_BLOCK "
            f"interventions; the sink counted {sink:,} emails"
        )
        self.expect(halted, f"each replica was refused once (server: {agent.get('refused')})")
        self.expect(sent == sink, f"the server's count ({sent:,}) equals the sink's ({sink:,})")
        self.expect(blocks == REPLICAS, f"{REPLICAS} refusals recorded as interventions ({blocks})")
        self.expect(
            agent.get("health") == "killed", f"the agent's health is killed ({agent.get('health')})"
        )

        acks = self.http.get(
            "/kill-switch/acks", params={"target_type": "agent", "target_id": AGENT}
        ).json()
        slowest = acks.get("slowest_ms")
        log(
            f"Kill acknowledged by {acks.get('acknowledged')}/{acks.get('live')} instances, "
            f"slowest {slowest:.1f} ms after the commit"
            if slowest is not None
            else f"Kill acknowledged by {acks.get('acknowledged')}/{acks.get('live')} instances"
        )
        self.expect(
            acks.get("acknowledged") == acks.get("live") == REPLICAS,
            f"all {REPLICAS} instances acknowledged the kill",
        )

        self.http.post(
            "/kill-switch/revive", json={"target_type": "agent", "target_id": AGENT}
        ).raise_for_status()
        log(
            f"Template fixed; usr_ops revived {AGENT!r}. "
            "The replicas resume from their checkpoints."
        )
        codes = [p.wait(45) for p in self.replicas]
        self.expect(codes == [0] * REPLICAS, f"every replica finished cleanly (exit codes {codes})")

        _until(lambda: self.agent().get("health") == "exited", 10)
        agent, deliveries = self.agent(), self.sink()
        total = sum(deliveries.values())
        log(
            f"Campaign finished: {total:,} emails delivered, {agent.get('executed')} batches "
            f"executed in all (server), {agent.get('refused')} refused; "
            f"agent {agent.get('health')}."
        )
        self.expect(total == TOTAL_EMAILS, f"all {TOTAL_EMAILS:,} emails delivered ({total:,})")
        self.expect(
            set(deliveries) == set(range(TOTAL_EMAILS)) and set(deliveries.values()) == {1},
            "every email delivered exactly once",
        )
        self.expect(
            agent.get("executed", 0) * BATCH == TOTAL_EMAILS,
            "the server's count equals the sink's",
        )
        self.expect(agent.get("health") == "exited", "every replica reported a clean exit")
        if self.failures:
            log(f"FAILED: {len(self.failures)} check(s) disagree")
            return 1
        log("OK: every number agrees.")
        return 0

    def close(self) -> None:
        for process in self.replicas:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)
        if self.http is not None:
            self.http.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    """Whether ``predicate`` came true in time.

    A bool rather than tenacity's RetryError: the demo reports a miss as a MISMATCH and goes on.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def main() -> int:
    """Run the demo; exit code 0 if every number agreed."""
    workdir = Path(tempfile.mkdtemp(prefix="agentguard-demo-"))
    operator = Demo(workdir)
    try:
        return operator.run()
    except Exception as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        operator.close()
        shutil.rmtree(workdir, ignore_errors=True)


@click.command()
@click.option("--replica", type=click.IntRange(0, REPLICAS - 1), hidden=True)
def demo(replica: int | None) -> None:
    """Run the demo.

    A runaway email agent on a real server: killed, refused, revived.
    """
    sys.exit(main() if replica is None else run_replica(replica))


COMMANDS = (demo,)
