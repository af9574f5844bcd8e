"""Where webhooks may go: URLs refused at registration, private addresses refused at connect."""

from __future__ import annotations

import ipaddress
import time

import httpcore
import pytest

from agentguard.errors import InvalidInputError
from agentguard.server.webhooks.addresses import PinnedBackend, check_url, is_public
from support.receiver import Receiver


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/agentguard",
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://events.pagerduty.com/v2/enqueue",
        "http://hooks.example.com:8080/x?token=abc",
        "http://93.184.216.34/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    assert check_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://user:secret@hooks.example.com/x", "user name or password"),
        ("https://token@hooks.example.com/x", "user name or password"),
        ("https:///x", "needs a host"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
        ("https://hooks.example.com:0/x", "port 0"),
        ("https://hooks.example.com/x#section", "fragment"),
        ("http://127.0.0.1:8080/", "not a public address"),
        ("http://127.1/", "not a public address"),
        ("http://2130706433/", "not a public address"),
        ("http://0x7f.0.0.1/", "not a public address"),
        ("http://0/", "not a public address"),
        ("http://10.1.2.3/", "not a public address"),
        ("http://172.16.0.1/", "not a public address"),
        ("http://192.168.1.1/", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "not a public address"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://[::1]/", "not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
        ("http://[fd00::1]/", "not a public address"),
        ("http://[fe80::1]/", "not a public address"),
        ("http://224.0.0.1/", "not a public address"),
        ("http://localhost:8000/", "this machine"),
        ("http://LOCALHOST./", "this machine"),
        ("http://api.localhost/", "this machine"),
    ],
)
def test_unsafe_urls_are_refused_naming_the_field(url: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_url(url, allow_private=False)
    assert refused.value.field == "url" and words in refused.value.message


def test_private_addresses_are_allowed_only_when_the_server_says_so() -> None:
    assert check_url("http://127.0.0.1:9000/hook", allow_private=True)
    assert check_url("http://localhost/hook", allow_private=True)
    with pytest.raises(InvalidInputError, match="user name or password"):
        check_url("http://u:p@127.0.0.1/", allow_private=True)  # credentials never


def test_is_public() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111"))
    for address in ("127.0.0.1", "10.0.0.1", "::1", "::ffff:10.0.0.1", "169.254.1.1", "ff02::1"):
        assert not is_public(ipaddress.ip_address(address)), address


def test_a_name_resolving_to_a_private_address_is_refused_when_connecting() -> None:
    """Registration cannot know what a name will resolve to; the connection checks the
    address it is about to use (here ``localhost``, written as a name in /etc/hosts)."""
    with Receiver() as receiver:
        backend = PinnedBackend(allow_private=False, deadline=time.monotonic() + 5)
        with pytest.raises(httpcore.ConnectError, match="not a public address"):
            backend.connect_tcp("localhost", receiver.port, timeout=5)
        allowed = PinnedBackend(allow_private=True, deadline=time.monotonic() + 5)
        allowed.connect_tcp("localhost", receiver.port, timeout=5).close()
        assert receiver.received() == []


def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    backend = PinnedBackend(allow_private=False, deadline=time.monotonic() + 5)
    with pytest.raises(httpcore.ConnectError, match="cannot resolve nowhere.invalid"):
        backend.connect_tcp("nowhere.invalid", 443, timeout=5)
