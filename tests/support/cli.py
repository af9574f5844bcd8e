"""What the CLI tests share: a real server on loopback, keys in fresh organizations, and the
``agentguard`` command run as a subprocess (``serve`` also with its output piped, to read it)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.polling import eventually
from support.processes import Process, free_port, serving, stop, wait_until_serving

TOKEN = re.compile(r"ag_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}")
COMMAND = [sys.executable, "-m", "agentguard.cli"]


def default_sigint() -> None:
    """``preexec_fn`` of a command a test stops with SIGINT (Ctrl-C): a shell starts ``cmd &``
    with SIGINT ignored, children inherit that, and Python then raises no KeyboardInterrupt; so a
    test run started in the background would see the command ignore the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def start_server(directory: Path, *options: str, database_url: str | None = None) -> Server:
    """Start ``agentguard serve [OPTIONS]``, wait until it answers; read the admin key it prints.

    On a SQLite file in ``directory`` unless ``database_url`` names another database.
    """
    port = free_port()
    database_url = database_url or f"sqlite:///{directory / 'agentguard.db'}"
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
    process = Process(popen, port, log)
    try:
        wait_until_serving(process)
    except BaseException:
        stop(popen)
        raise
    match = TOKEN.search(log.read_text())
    assert match, log.read_text()
    return Server(popen, process.url, database_url, match.group(0), log)


def serve(directory: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start ``agentguard serve ARGS`` in ``directory`` with its output piped; (process, port)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AGENTGUARD_DATABASE_URL"}
    popen = subprocess.Popen(
        [*COMMAND, "serve", "--port", str(port), "--log-level", "warning", *args],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    return popen, port


def first_token(popen: subprocess.Popen[str]) -> str:
    """Read the server's output until the admin key appears (or the output ends)."""
    assert popen.stdout is not None
    seen = ""
    for line in popen.stdout:  # blocks per line; pytest's timeout bounds a server gone silent
        seen += line
        match = TOKEN.search(line)
        if match:
            return match.group(0)
    raise AssertionError(f"no admin key printed:\n{seen}")


def wait_serving(port: int, popen: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait until the server on ``port`` answers (fail at once if it exited)."""
    eventually(lambda: serving(f"http://127.0.0.1:{port}", popen), timeout, 0.05)
