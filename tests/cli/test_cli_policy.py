"""For scripts and policy: ``check --exit-status`` and ``serve --require-reason``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from agentguard import Guard, InvalidInputError
from agentguard.cli import EXIT_KILLED
from agentguard.server import KillSwitchServer
from support.cli import Server, start_server
from support.processes import stop


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("require-reason"), "--require-reason")
    yield s
    stop(s.popen)


def test_check_exit_status_says_killed_or_not(strict_server: Server) -> None:
    operator = strict_server.key("operator")
    alive = strict_server.cli(operator, "check", "agent", "bot", "--exit-status")
    assert alive.code == 0, alive
    assert "is not killed" in alive.stdout
    killed = strict_server.cli(operator, "kill", "agent", "bot", "--reason", "loops")
    assert killed.code == 0, killed
    status = strict_server.cli(operator, "check", "agent", "bot", "--exit-status")
    assert status.code == EXIT_KILLED == 4, status
    assert "is KILLED" in status.stdout
    as_json = strict_server.cli(operator, "check", "agent", "bot", "--exit-status", "--json")
    assert as_json.code == 4 and as_json.json()["is_killed"] is True
    plain = strict_server.cli(operator, "check", "agent", "bot")
    assert plain.code == 0, plain  # without the option: 0 either way, as before


def test_exit_status_4_is_documented_beside_the_other_exit_codes(strict_server: Server) -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "4 killed (`check --exit-status`" in readme
    usage = strict_server.cli(None, "--help").stdout
    assert "4  check --exit-status: the target is killed" in usage


def test_serve_require_reason_refuses_kills_without_a_reason(strict_server: Server) -> None:
    operator = strict_server.key("operator")
    bare = strict_server.cli(operator, "kill", "agent", "bot")
    assert bare.code == 2, bare
    assert "reason" in bare.stderr and "refuses kills without a reason" in bare.stderr
    headers = {"Authorization": f"Bearer {operator}"}
    for body in ({}, {"reason": None}, {"reason": "   "}):
        answer = httpx.post(
            f"{strict_server.url}/api/v1/kill-switch/kill",
            json={"target_type": "agent", "target_id": "bot", **body},
            headers=headers,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "reason"
    active = strict_server.cli(operator, "active", "--json").json()
    assert active["count"] == 0  # nothing half-written
    given = strict_server.cli(operator, "kill", "agent", "bot", "--reason", "drained $3k")
    assert given.code == 0, given


def test_server_argument_require_reason_also_binds_in_process_guards() -> None:
    strict = KillSwitchServer(require_reason=True)
    guard = Guard(strict)
    with pytest.raises(InvalidInputError) as caught:
        guard.kill("agent", "bot")
    assert caught.value.field == "reason"
    assert guard.active() == []
    guard.kill("agent", "bot", reason="loops")
    assert guard.check("agent", "bot").is_killed
    with pytest.raises(InvalidInputError) as caught:
        guard.revive("agent", "bot")  # revives too
    assert caught.value.field == "reason" and "refuses revives" in caught.value.message
    assert guard.check("agent", "bot").is_killed
    guard.revive("agent", "bot", reason="fixed the loop")
    assert not guard.check("agent", "bot").is_killed
    lenient = Guard(KillSwitchServer())
    lenient.kill("agent", "bot")  # the default: a reason is optional
    assert lenient.check("agent", "bot").is_killed
    lenient.revive("agent", "bot")
    assert not lenient.check("agent", "bot").is_killed


def test_serve_require_reason_refuses_revives_without_a_reason(strict_server: Server) -> None:
    operator = strict_server.key("operator")
    assert strict_server.cli(operator, "kill", "agent", "bot", "--reason", "loops").code == 0
    bare = strict_server.cli(operator, "revive", "agent", "bot")
    assert bare.code == 2, bare
    assert "refuses revives without a reason" in bare.stderr
    headers = {"Authorization": f"Bearer {operator}"}
    for body in ({}, {"reason": None}, {"reason": "   "}):
        answer = httpx.post(
            f"{strict_server.url}/api/v1/kill-switch/revive",
            json={"target_type": "agent", "target_id": "bot", **body},
            headers=headers,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "reason"
    assert strict_server.cli(operator, "check", "agent", "bot", "--json").json()["is_killed"]
    given = strict_server.cli(operator, "revive", "agent", "bot", "--reason", "fixed the loop")
    assert given.code == 0, given
    audit = strict_server.cli(operator, "audit", "--action", "revive", "--json").json()["data"]
    assert [e["detail"] for e in audit] == ["fixed the loop"]
