"""Run the agentguard API in a uvicorn process for a benchmark: start it on a free port, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    database_url: str, log: Path | None = None, *, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    """A uvicorn process serving the API on 127.0.0.1, once it answers, and its base URL.

    Its output goes to ``log`` when given, else to this process's.
    """
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "agentguard.server.asgi:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {**os.environ, "AGENTGUARD_DATABASE_URL": database_url}
    output = log.open("wb") if log is not None else None
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )
    if output is not None:
        output.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/api/v1/openapi.json", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(process)
    said = f": {log.read_text()}" if log is not None else ""
    raise RuntimeError(f"uvicorn did not start{said}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def uvicorn(database_url: str, workers: int = 1, log: Path | None = None) -> Iterator[str]:
    """A uvicorn process serving the API for the ``with`` block; yields its base URL."""
    process, url = start_server(database_url, log, workers=workers)
    try:
        yield url
    finally:
        stop_server(process)
