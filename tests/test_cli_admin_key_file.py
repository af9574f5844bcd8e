"""``agentguard serve --admin-key-file``: the first admin key goes to a 0600 file, not stdout
(and so not into container logs)."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = re.compile(r"ag_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AGENTGUARD_DATABASE_URL"}
    argv = [sys.executable, "-m", "agentguard.cli", "serve", "--port", str(port), *args]
    popen = subprocess.Popen(
        [*argv, "--log-level", "warning"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    return popen, port


def wait_serving(port: int, popen: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert popen.poll() is None, "server exited"
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("server did not answer")


def stop(popen: subprocess.Popen[str]) -> str:
    popen.terminate()
    try:
        out, _ = popen.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        popen.kill()
        out, _ = popen.communicate(timeout=5)
    return out or ""


def test_the_first_admin_key_goes_to_a_private_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "admin-key"
    key_file.parent.mkdir()
    popen, port = serve(tmp_path, "--admin-key-file", str(key_file))
    try:
        wait_serving(port, popen)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        token = key_file.read_text().strip()
        assert TOKEN.fullmatch(token)
        keys = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/keys",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert keys.status_code == 200 and keys.json()["data"][0]["scopes"] == ["admin"]
    finally:
        out = stop(popen)
    assert not TOKEN.search(out), out  # the output has the key's id, never its secret
    assert str(key_file) in out


def test_an_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("precious\n")
    popen, _ = serve(tmp_path, "--admin-key-file", str(key_file))
    out, _ = popen.communicate(timeout=30)
    assert popen.returncode == 2, out
    assert "--admin-key-file" in out and "exists" in out
    assert key_file.read_text() == "precious\n"
    assert not TOKEN.search(out)
