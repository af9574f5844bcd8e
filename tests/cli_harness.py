"""What the CLI tests share: a real server on loopback, keys in fresh organizations, and the
``agentguard`` command run as a subprocess."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TOKEN = re.compile(r"ag_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}")
COMMAND = [sys.executable, "-m", "agentguard.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any AGENTGUARD_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env.update(extra)
    return env


@dataclass
class Result:
    """A finished ``agentguard`` run."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:  # shown when an assertion fails
        return f"agentguard {' '.join(self.args)} -> {self.code}\n{self.stdout}\n{self.stderr}"


def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Result:
    """Run ``agentguard ARGS`` in a subprocess, with a clean environment plus ``env``."""
    done = subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        timeout=timeout,
    )
    return Result(list(args), done.returncode, done.stdout, done.stderr)


@dataclass
class Server:
    """``agentguard serve`` on a free loopback port, on a SQLite file."""

    popen: subprocess.Popen[bytes]
    url: str
    database_url: str
    admin_key: str
    log: Path

    def key(self, *scopes: str, org: str | None = None, owner: str = "usr_ops") -> str:
        """A new API key; by default in a fresh organization, so tests do not see each other."""
        from agentguard.server.auth.keys import KeyStore
        from agentguard.server.store.database import Database
        from agentguard.server.store.sqlstore import SQLStore

        database = Database(self.database_url)
        try:
            _, token = KeyStore(database, SQLStore(database).feed).create(
                org or f"org_{uuid.uuid4().hex[:8]}",
                owner=owner,
                scopes=list(scopes),
                agents=["*"] if "agent" in scopes else None,  # agent keys: for any agent
                actor="test",
            )
        finally:
            database.dispose()
        return token

    def env(self, api_key: str | None) -> dict[str, str]:
        """AGENTGUARD_URL and AGENTGUARD_API_KEY for this server."""
        env = {"AGENTGUARD_URL": self.url}
        if api_key is not None:
            env["AGENTGUARD_API_KEY"] = api_key
        return env

    def cli(self, api_key: str | None, *args: str, timeout: float = 30.0) -> Result:
        """Run ``agentguard ARGS`` against this server with a key from the environment."""
        return run(*args, env=self.env(api_key), timeout=timeout)


def start_server(directory: Path, *options: str) -> Server:
    """Start ``agentguard serve [OPTIONS]``, wait until it answers; read the admin key it prints."""
    port = free_port()
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    log = directory / f"serve-{port}.log"
    popen = subprocess.Popen(
        [
            *COMMAND,
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--log-level",
            "warning",
            *options,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=clean_env(),
        cwd=directory,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"agentguard serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/api/v1/openapi.json", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        stop(popen)
        raise AssertionError(f"agentguard serve did not answer:\n{log.read_text()}")
    match = TOKEN.search(log.read_text())
    assert match, log.read_text()
    return Server(popen, url, database_url, match.group(0), log)


def stop(popen: subprocess.Popen[Any]) -> None:
    """Terminate a process, killing it if it lingers."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
