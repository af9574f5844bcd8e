"""Where webhooks may go: URLs checked when registered, addresses checked when connecting.

A server that POSTs to URLs its users give can be steered at its own network (SSRF): the
cloud's metadata service, a database on loopback, an admin page on 10.0.0.0/8. So, unless the
server allows private addresses (``WebhookSettings(allow_private_addresses=True)``,
``agentguard serve --webhooks-allow-private``):

- at registration, a URL must be ``http://`` or ``https://`` with a host and no user name or
  password, and a host written as an address (``10.0.0.1``, ``[::1]``, ``2130706433``) or
  ``localhost`` must be public;
- at every delivery the host is resolved and the connection goes to the address that was
  checked, never to one resolved again later (so DNS rebinding cannot swap it); any
  non-public address among the answers refuses the delivery.

Redirects are never followed (the sender reports them as failures), so a public endpoint
cannot bounce a delivery to another host either.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from ...errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048


def is_public(ip: IPAddress) -> bool:
    """Whether an address is on the public internet (not private, loopback, link-local,
    shared, reserved or multicast); an IPv4 address mapped into IPv6 counts as itself."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> IPAddress | None:
    """The address a host written as one stands for, in any form a resolver accepts."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:  # 127.1, 0x7f.0.0.1, 2130706433: inet_aton's forms, which getaddrinfo accepts
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, if a webhook may be registered with it; else an error naming ``url``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError("url", f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError("url", "must start with http:// or https://")
    if "@" in parts.netloc:
        raise InvalidInputError(
            "url", "must not carry a user name or password; put credentials in the path"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidInputError("url", "needs a host, as in https://hooks.example.com/agentguard")
    if port == 0:
        raise InvalidInputError("url", "port 0 is not a port to send to")
    if parts.fragment or url.endswith("#"):
        raise InvalidInputError("url", "must not have a #fragment (it is never sent)")
    if allow_private:
        return url
    ip = _literal(host)
    if ip is not None and not is_public(ip):
        raise InvalidInputError(
            "url",
            f"{host} is not a public address; this server sends webhooks to public addresses "
            "only (start it with --webhooks-allow-private to allow private ones)",
        )
    if ip is None and (host.lower() == "localhost" or host.lower().endswith(".localhost")):
        raise InvalidInputError(
            "url",
            f"{host} is this machine; this server sends webhooks to public addresses only "
            "(start it with --webhooks-allow-private to allow private ones)",
        )
    return url


def url_host(url: str) -> str:
    """The host of a URL, for logs and errors: never its path or query, which may hold a
    token (a Slack webhook URL is its own credential)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class AttemptTimeout(httpcore.TimeoutException):
    """An attempt ran past its deadline."""


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to checked addresses, before a deadline.

    Resolves the host once, refuses (unless ``allow_private``) if any address is not public,
    and connects to those same addresses. Every read and write after that waits at most
    until ``deadline`` (``time.monotonic()``), so a receiver answering one byte at a time
    cannot hold a delivery longer than the sender's timeout.
    """

    def __init__(self, *, allow_private: bool, deadline: float) -> None:
        self.allow_private = allow_private
        self.deadline = deadline
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in answers))
        if not self.allow_private:
            for address in addresses:
                if not is_public(ipaddress.ip_address(address.split("%", 1)[0])):
                    raise httpcore.ConnectError(
                        f"{host} resolves to {address}, which is not a public address; "
                        "not sent (this server sends webhooks to public addresses only)"
                    )
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(
                    address,
                    port,
                    timeout=remaining(self.deadline, timeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def remaining(deadline: float, timeout: float | None) -> float:
    """The time an operation may take: its own timeout, cut to what is left of the attempt."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise AttemptTimeout("the receiver took longer than the webhook timeout")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, remaining(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, remaining(self._deadline, timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context, server_hostname, remaining(self._deadline, timeout)
        )
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
