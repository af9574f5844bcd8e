"""The CLI on a terminal (a pseudo-terminal here): rich tables, ``kill --wait``'s live progress
and ``tail``'s status line; and the same commands piped, as plain columns."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from rich.console import Console

from agentguard.cli import output as out
from agentguard.client import Agent
from agentguard.records import KillSwitch
from support.cli import COMMAND, Server, clean_env, default_sigint, start_server
from support.processes import stop

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOLD = "\x1b[1m"


class Terminal:
    """``agentguard ARGS`` on a 120-column pseudo-terminal, its screen output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        environment = clean_env(TERM="xterm-256color", **env)
        for name in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE"):
            environment.pop(name, None)
        self.popen = subprocess.Popen(
            [*COMMAND, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environment,
            preexec_fn=default_sigint,
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                if self.popen.poll() is not None:
                    return
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def raw(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    @property
    def text(self) -> str:
        """What was written, escape codes removed."""
        return ESCAPE.sub("", self.raw)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert time.monotonic() < deadline, f"{text!r} never shown:\n{self.raw!r}"
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout)
        self.reader.join(5)
        os.close(self.master)
        return code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("terminal-server"))
    yield s
    stop(s.popen)


def kill_switch(target_id: str, reason: str | None) -> KillSwitch:
    return KillSwitch(
        id=f"ks-{target_id}",
        target_type="agent",
        target_id=target_id,
        reason=reason,
        is_active=True,
        organization_id="org_a",
        killed_by="usr_ops",
        killed_at=datetime.now(timezone.utc) - timedelta(minutes=2),
    )


def test_a_piped_table_is_plain_columns_two_spaces_apart() -> None:
    rows = [kill_switch("rogue-bot", "Drained $3k [bold]not markup[/]"), kill_switch("b", None)]
    assert out.plain(out.kill_switches(rows, 3)) == (
        "TYPE   ID         KILLED     BY       REASON\n"
        "agent  rogue-bot  2 min ago  usr_ops  Drained $3k [bold]not markup[/]\n"
        "agent  b          2 min ago  usr_ops  -\n"
        "(2 of 3; see --limit and --skip)"
    )


def test_piped_sentences_keep_the_reason_as_given() -> None:
    reason = "loops\tagain [red]x[/]\x07"
    agent = Agent(agent_id="bot", health="killed", kill_switch=kill_switch("bot", reason))
    assert out.plain(out.agent(agent)).splitlines()[1:] == [
        "health     killed",
        "last seen  - (-)",
        "calls      0 executed, 0 refused, 0 stopped by a kill, 0 failed",
        "cost       $0.00 in all, $0.00 today",
        f"killed     2 min ago by usr_ops: {reason}",
    ]


def test_a_table_on_a_narrow_terminal_has_a_bold_header_and_wraps_its_last_column() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=60, color_system="standard")
    terminal.print(out.kill_switches([kill_switch("rogue-bot", "x" * 50)], 1))
    lines = ESCAPE.sub("", screen.getvalue()).splitlines()
    assert BOLD in screen.getvalue()
    assert lines[0].split() == ["TYPE", "ID", "KILLED", "BY", "REASON"]
    assert lines[1].split()[:2] == ["agent", "rogue-bot"]
    assert all(len(line) <= 60 for line in lines) and len(lines) > 2  # the reason wraps
    assert "".join(line.split()[-1] for line in lines[1:]).startswith("x" * 49)


def test_active_on_a_terminal_renders_a_rich_table(server: Server) -> None:
    operator = server.key("operator")
    assert server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "Drained $3k").code == 0
    terminal = Terminal(server.env(operator), "active")
    assert terminal.wait() == 0, terminal.raw
    assert BOLD in terminal.raw  # the header, as rich styles it
    header, row = terminal.text.strip().splitlines()
    assert header.split() == ["TYPE", "ID", "KILLED", "BY", "REASON"]
    assert row.split()[:2] == ["agent", "rogue-bot"] and row.endswith("Drained $3k")
    piped = server.cli(operator, "active")
    assert "\x1b" not in piped.stdout and piped.stdout.splitlines()[0].startswith("TYPE  ")


def test_kill_wait_on_a_terminal_shows_a_live_progress_bar(server: Server) -> None:
    org = "org_terminal_wait"
    operator = server.key("operator", org=org)
    agent_key = server.key("agent", org=org, owner="usr_bot")
    beat = {"instance_id": "inst-silent", "agent_id": "bot", "interval": 60, "executed": 0,
            "refused": 0, "failed": 0, "cost_usd": 0, "version": 0}  # fmt: skip
    answer = httpx.post(
        f"{server.url}/api/v1/heartbeats",
        json=beat,
        headers={"Authorization": f"Bearer {agent_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text  # live, and never acknowledges
    terminal = Terminal(server.env(operator), "kill", "agent", "bot", "--wait", "--timeout", "1.5")
    assert terminal.wait() == 1, terminal.raw
    text = terminal.text
    assert "killed agent 'bot' (version 1)" in text
    progress = re.findall(r"acknowledged by 0/1 instance \((\d+\.\d) s\)", text)
    assert len(set(progress)) >= 2, text  # redrawn in place as time passes
    assert "━" in text  # rich's bar
    assert "\r" in terminal.raw or "\x1b[2K" in terminal.raw  # the line is rewritten, not repeated
    assert "Error: acknowledged by 0/1 instance within 1.5 s; waiting on inst-silent" in text


def test_tail_on_a_terminal_prints_events_above_a_live_status_line(server: Server) -> None:
    org = "org_terminal_tail"
    operator = server.key("operator", org=org)
    terminal = Terminal(server.env(server.key("read", org=org)), "tail", "--count", "1",
                        "--timeout", "30")  # fmt: skip
    terminal.wait_for("0 events shown")
    assert server.cli(operator, "kill", "agent", "rogue-bot", "--reason", "loops").code == 0
    assert terminal.wait() == 0, terminal.raw
    text = terminal.text
    assert "watching " in text and "at version 0: 0 events shown" in text
    killed = next(line for line in text.splitlines() if "KILLED" in line)
    assert killed.split()[1:3] == ["KILLED", "agent/rogue-bot"] and killed.rstrip().endswith(
        "loops"
    )
    assert "\x1b[1;31mKILLED" in terminal.raw  # bold red


def test_tail_on_a_terminal_stops_quietly_on_ctrl_c(server: Server) -> None:
    terminal = Terminal(server.env(server.key("read")), "tail")
    terminal.wait_for("0 events shown")
    terminal.popen.send_signal(signal.SIGINT)
    assert terminal.wait() == 0, terminal.raw
    assert "Traceback" not in terminal.text and "Aborted" not in terminal.text
