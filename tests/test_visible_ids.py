"""Ids are visible text: no control, format or invisible characters, no look-alike scripts."""

from __future__ import annotations

import sys
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert
from starlette.testclient import TestClient

import agentguard
from agentguard import Guard, InvalidInputError, NotKilledError
from agentguard.remote.heartbeat import Heartbeat
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import kill_switches
from agentguard.targets import HIDDEN_RANGES, id_text_problem, validate_id

INVISIBLE = {
    "a zero-width space": "email\u200b-campaign",
    "a zero-width joiner": "email\u200d-campaign",
    "a right-to-left override": "email-campaign\u202e",
    "a left-to-right isolate": "\u2066email-campaign",
    "a byte-order mark": "\ufeffemail-campaign",
    "a soft hyphen": "email\u00adcampaign",
    "a tag character": "email-campaign\U000e0041",
    "a variation selector": "email\ufe0f-campaign",
    "a line separator": "email\u2028campaign",
    "a tab": "email\tcampaign",
    "a DEL": "email\x7fcampaign",
}
LOOK_ALIKES = {
    "a Cyrillic е in a Latin id": "\u0435mail-campaign",
    "a Greek ο in a Latin id": "rogue-b\u03bft",
    "a Latin a in a Cyrillic word": "\u0440\u043e\u0431\u043e\u0442a-1",
    "look-alikes in the second word": "campaign-r\u043egue",
}
FINE = [
    "email-campaign",
    "café-bot",
    "注文-bot",
    "бот-1",
    "ρομπότ",
    "run 42",
    "a.b:c@d",
    "Агент GPT",  # a word in each script: what a framework's agent name may look like
    "search_документы",
]


def every_hidden_character() -> list[str]:
    return [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp")
    ]


def test_hidden_ranges_cover_every_control_format_and_separator_character() -> None:
    covered = {c for a, b in HIDDEN_RANGES for c in range(a, b + 1)}
    missing = [f"U+{ord(c):04X}" for c in every_hidden_character() if ord(c) not in covered]
    assert not missing
    for char in every_hidden_character():
        assert id_text_problem(f"a{char}b") is not None


@pytest.mark.parametrize("text", FINE)
def test_visible_ids_in_one_script_or_with_unconfusable_scripts_are_fine(text: str) -> None:
    assert validate_id("agent_id", text) == text
    guard = Guard()
    guard.kill("agent", text)
    assert guard.check("agent", text).is_killed


@pytest.mark.parametrize("text", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_kill_refuses_invisible_characters_naming_the_field(text: str) -> None:
    guard = Guard()
    with pytest.raises(InvalidInputError) as caught:
        guard.kill("agent", text, reason="x")
    assert caught.value.field == "target_id"
    assert "invisible" in caught.value.message and "U+" in caught.value.message
    assert guard.active() == []


@pytest.mark.parametrize("text", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_kill_refuses_ids_mixing_look_alike_scripts(text: str) -> None:
    guard = Guard()
    with pytest.raises(InvalidInputError) as caught:
        guard.kill("agent", text)
    assert caught.value.field == "target_id"
    assert "must not mix Latin, Greek and Cyrillic letters in a word" in caught.value.message
    with pytest.raises(InvalidInputError):
        guard.check("agent", text)


@pytest.mark.parametrize("field", ["agent_id", "run_id", "mission_id"])
@pytest.mark.parametrize("text", [*INVISIBLE.values(), *LOOK_ALIKES.values()])
def test_scope_ids_are_visible(field: str, text: str) -> None:
    with pytest.raises(InvalidInputError) as caught, agentguard.scope(**{field: text}):
        pass
    assert caught.value.field == field
    with pytest.raises(InvalidInputError) as caught:
        Guard(**{field: text})  # type: ignore[arg-type]
    assert caught.value.field == field
    with pytest.raises(InvalidInputError) as caught:
        Guard().guarded_action(**{field: text})(lambda: None)
    assert caught.value.field == field
    with pytest.raises(InvalidInputError) as caught:
        Heartbeat(Guard(), 10, **{field: text})
    assert caught.value.field == field
    with pytest.raises(InvalidInputError) as caught:
        Guard().report_metric(cost_usd=1.0, **{field: text})
    assert caught.value.field == field


@pytest.mark.parametrize(
    "text", [INVISIBLE["a zero-width space"], LOOK_ALIKES["a Cyrillic е in a Latin id"]]
)
def test_instance_ids_and_action_names_are_visible(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Guard(instance_id=text)
    assert caught.value.field == "instance_id"
    with pytest.raises(InvalidInputError) as caught:
        Guard().guarded_action(name=text)(lambda: None)
    assert caught.value.field == "name"


def test_a_target_killed_before_ids_were_checked_can_still_be_revived(tmp_path: Path) -> None:
    legacy = "\u0435mail-campaign"  # a Cyrillic "е": refused as a new id
    url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    first = KillSwitchServer(url)
    first.start()
    with first.database.write() as conn:  # a row written by an older version
        conn.execute(
            insert(kill_switches).values(
                id=str(uuid.uuid4()),
                organization_id="org_a",
                target_type="agent",
                target_id=legacy,
                reason="old",
                is_active=True,
                killed_by="usr_old",
                killed_at=datetime.now(timezone.utc),
            )
        )
    first.close()
    server = KillSwitchServer(url)
    token = server.create_key("org_a", owner="ops", scopes=["operator"])
    client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
    target = {"target_type": "agent", "target_id": legacy}
    refused = client.post("/api/v1/kill-switch/kill", json=target)
    assert refused.status_code == 422 and refused.json()["field"] == "target_id"
    assert client.get("/api/v1/kill-switch/active").json()["count"] == 1
    revived = client.post("/api/v1/kill-switch/revive", json=target)
    assert revived.status_code == 200, revived.text
    assert client.get("/api/v1/kill-switch/active").json()["count"] == 0
    with pytest.raises(InvalidInputError):
        Guard(server, organization_id="org_a").kill("agent", legacy)
    with pytest.raises(NotKilledError):  # accepted as an id to revive; nothing left to revive
        Guard(server, organization_id="org_a").revive("agent", legacy)
    server.close()
