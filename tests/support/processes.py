"""Server processes on loopback: a free port, waiting until one serves, stopping it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx

from support.polling import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server process on loopback."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.popen = popen
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def serving(url: str, popen: subprocess.Popen[Any], output: Any = "") -> bool:
    """Whether the API at ``url`` answers; fails at once (with ``output``) if the process exited."""
    if popen.poll() is not None:
        shown = output() if callable(output) else output
        raise RuntimeError(f"server exited with {popen.returncode}:\n{shown}")
    try:
        return httpx.get(f"{url}/api/v1/openapi.json", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_serving(process: Process, timeout: float = 30.0) -> None:
    """Wait until the server answers its OpenAPI document (or fail with its log)."""
    eventually(
        lambda: serving(process.url, process.popen, process.output),
        timeout,
        0.05,
        message=process.output,
    )


def stop(process: Process | subprocess.Popen[Any]) -> str:
    """Terminate the process (and its workers), killing it if it lingers; its piped output."""
    popen = process.popen if isinstance(process, Process) else process
    if popen.poll() is None:
        popen.terminate()
    try:
        out, _ = popen.communicate(timeout=10)  # reads a piped stdout, so the server never blocks
    except subprocess.TimeoutExpired:
        popen.kill()
        out, _ = popen.communicate(timeout=5)
    return out or ""
