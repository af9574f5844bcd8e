"""Labels and selector kills in the engine: normalisation, matching against a guard's labels
and a call's own keys, and what they refuse and stop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentguard import AlreadyKilledError, Guard, InvalidInputError, PolicyViolationError, scope
from agentguard.targets import validate_target


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("env=prod", "env=prod"),
        (" team=growth , env=prod ", "env=prod,team=growth"),
        ("tool=send_email,agent=email-campaign", "agent=email-campaign,tool=send_email"),
        ("env==prod,env=prod", "env=prod"),
        ("acme.io/team=growth", "acme.io/team=growth"),
    ],
)
def test_a_selector_has_one_canonical_string(given: str, canonical: str) -> None:
    assert validate_target("selector", given) == ("selector", canonical)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("", "empty"),
        ("env", "key=value"),
        ("env=", "key=value"),
        ("env=prod,", "none empty"),
        ("env=prod,env=dev", "two values"),
        ("env!=prod", "only equality"),
        ("bad key=x", "label key"),
        ("env=pr od", "value"),
        ("agent=a\u200bb", "invisible"),
    ],
)
def test_bad_selectors_name_the_target_id(given: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_target("selector", given)
    assert caught.value.field == "target_id" and words in caught.value.message


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"tool": "x"}, "labels.tool"),
        ({"bad key": "x"}, "labels.bad key"),
        ({"env": ""}, "labels.env"),
        ({"env": 1}, "labels.env"),
        ({f"k{i}": "v" for i in range(33)}, "labels"),
    ],
)
def test_bad_labels_name_the_label(labels: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Guard(labels=labels)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_selector_of_labels_refuses_every_call_of_a_guard_with_them() -> None:
    prod = Guard(labels={"env": "prod", "team": "growth"}, agent_id="mailer")
    staging = Guard(prod.source.store, labels={"env": "staging", "team": "growth"})  # type: ignore[attr-defined]

    @prod.guarded_action
    def send() -> str:
        return "sent"

    @staging.guarded_action(agent_id="mailer")
    def send_staging() -> str:
        return "sent"

    ks = prod.kill("selector", "team=growth, env=prod", reason="prod only")
    assert ks.target_id == "env=prod,team=growth"
    with pytest.raises(AlreadyKilledError):
        prod.kill("selector", "env=prod,team=growth")  # the same selector: one active kill
    with pytest.raises(PolicyViolationError) as refused:
        send()
    assert (refused.value.target_type, refused.value.target_id) == ("selector", ks.target_id)
    assert send_staging() == "sent"  # its labels are not selected
    assert prod.check("selector", "team=growth,env=prod").is_killed
    prod.revive("selector", "team=growth,env=prod")
    assert send() == "sent"


def test_a_selector_of_call_keys_stops_one_tool_of_one_agent() -> None:
    guard = Guard(labels={"env": "prod"})

    @guard.guarded_action(name="send_email")
    def send_email() -> str:
        return "sent"

    @guard.guarded_action(name="fetch")
    def fetch() -> str:
        return "fetched"

    guard.kill("selector", "tool=send_email,agent=email-campaign")
    guard.kill("selector", "env=staging")  # another environment: selects nothing here
    with scope(agent_id="email-campaign"):
        with pytest.raises(PolicyViolationError):
            send_email()
        assert fetch() == "fetched"
    with scope(agent_id="billing"):
        assert send_email() == "sent"
    assert send_email() == "sent"  # no agent at all
    guard.kill("selector", "env=prod,run=r-7")
    with scope(agent_id="billing", run_id="r-7"):
        with pytest.raises(PolicyViolationError) as refused:
            fetch()
    assert refused.value.target_id == "env=prod,run=r-7"
    with scope(agent_id="billing", run_id="r-8"):
        assert fetch() == "fetched"


def test_a_selector_kill_stops_the_calls_it_selects_in_flight() -> None:
    guard = Guard(labels={"env": "prod"}, agent_id="crawler")

    @guard.guarded_action(name="crawl")
    async def crawl() -> None:
        await asyncio.sleep(30)

    @guard.guarded_action(name="other")
    async def other() -> str:
        await asyncio.sleep(0.3)
        return "done"

    async def main() -> tuple[BaseException | str, ...]:
        threading.Timer(0.1, lambda: guard.kill("selector", "env=prod,tool=crawl")).start()
        return tuple(await asyncio.gather(crawl(), other(), return_exceptions=True))

    stopped, finished = asyncio.run(main())
    assert isinstance(stopped, PolicyViolationError) and stopped.cancelled
    assert stopped.target_id == "env=prod,tool=crawl"
    assert finished == "done"
    guard.close()
