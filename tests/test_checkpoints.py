"""Checkpoints and pausing on a kill until the revive."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentguard import Guard, InvalidInputError, MemoryStore, scope
from agentguard.checkpoints import MAX_CHECKPOINT_BYTES


def test_checkpoint_round_trip_and_replace() -> None:
    store = MemoryStore()
    guard = Guard(store)
    assert guard.load_checkpoint("campaign") is None
    assert guard.load_checkpoint("campaign", default={"done": []}) == {"done": []}
    guard.checkpoint("campaign", {"done": [1, 2], "cursor": "abc"})
    guard.checkpoint("campaign", {"done": [1, 2, 3], "cursor": "def"})
    assert Guard(store).load_checkpoint("campaign") == {"done": [1, 2, 3], "cursor": "def"}
    assert Guard(store, organization_id="other").load_checkpoint("campaign") is None


def test_checkpoint_limits_and_errors_name_the_field() -> None:
    guard = Guard()
    with pytest.raises(
        InvalidInputError,
        match=r"state: is 262,1\d\d bytes as JSON; checkpoints are limited to 262,144",
    ):
        guard.checkpoint("big", "x" * MAX_CHECKPOINT_BYTES)
    with pytest.raises(InvalidInputError, match="state: must be JSON-serialisable"):
        guard.checkpoint("bad", {"when": object()})
    with pytest.raises(InvalidInputError, match="state"):
        guard.checkpoint("nan", float("nan"))
    with pytest.raises(InvalidInputError, match="key"):
        guard.checkpoint("", {})
    with pytest.raises(InvalidInputError, match="key"):
        guard.load_checkpoint("k" * 257)
    guard.checkpoint("ok", "x" * (MAX_CHECKPOINT_BYTES - 2))  # exactly 256 KiB as JSON
    assert guard.load_checkpoint("big") is None  # nothing half-written


def test_wait_until_revived_blocks_until_the_revive() -> None:
    guard = Guard()
    guard.kill("agent", "bot")
    with scope(agent_id="bot"):
        assert guard.wait_until_revived(timeout=0.05) is False
        threading.Timer(0.05, lambda: guard.revive("agent", "bot")).start()
        assert guard.wait_until_revived(timeout=5) is True
    assert guard.wait_until_revived(timeout=0, agent_id="someone-else") is True


async def test_await_revived() -> None:
    guard = Guard()
    guard.kill("mission", "m")
    with scope(mission_id="m", agent_id="a"):
        assert await guard.await_revived(timeout=0.05) is False
        asyncio.get_running_loop().call_later(0.05, guard.revive, "mission", "m")
        assert await guard.await_revived(timeout=5) is True


@pytest.mark.parametrize("key", ["step 1", "a/b", ".hidden", "..", "key\n", "naïve"])
def test_a_key_that_could_not_travel_in_a_url_is_refused_in_process_too(key: str) -> None:
    """Every store takes the keys the HTTP API takes, so a key stored here reads back there."""
    with pytest.raises(InvalidInputError) as caught:
        Guard().checkpoint(key, {"next": 1})
    assert caught.value.field == "key"
    assert "letters, digits" in caught.value.message
