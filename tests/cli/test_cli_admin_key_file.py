"""``agentguard serve --admin-key-file``: the first admin key goes to a 0600 file, not stdout
(and so not into container logs)."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from support.cli import TOKEN, serve, wait_serving
from support.processes import stop


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
