"""The webhook sender: claims due deliveries from the outbox, sends them, records each attempt.

One sender runs in every server process (``KillSwitchServer.start``). Each delivery is leased
by one sender at a time (see :mod:`agentguard.server.store.webhooks`), so replicas and workers
share the work and never send a delivery twice while its lease holds; a lease outlives an
attempt's deadline, so a slow attempt cannot be overtaken. A process killed mid-attempt leaves
its lease to expire and the delivery is sent again: delivery is at least once, and receivers
can drop repeats by ``webhook-id``.

A failed attempt is retried with exponential backoff (``first_retry`` doubling up to
``max_retry_interval``, with 20% jitter) until ``retry_for`` after the event; then the delivery
is given up (status ``failed``). Counters of this process's outcomes: :meth:`WebhookSender.counts`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpcore
import httpx

from ...errors import InvalidInputError
from ...records import utcnow
from ..store.database import Outage, is_unavailable
from ..store.sqlstore import SQLStore
from ..store.webhooks import Claim
from .addresses import PinnedBackend, url_host
from .formats import render

logger = logging.getLogger("agentguard.server")

_TIMEOUTS = ("connect", "read", "write", "pool")  # httpcore's timeout kinds
_BODY_SHOWN = 200  # characters of a failing answer's body kept in the delivery log


@dataclass(frozen=True)
class WebhookSettings:
    """How a server sends webhooks.

    ``allow_private_addresses`` lets webhooks reach loopback, private and link-local
    addresses (off by default: see :mod:`.addresses`). ``send=False`` runs no sender in this
    process (other replicas deliver). ``timeout`` bounds one attempt, connection to answer;
    failed attempts are retried after ``first_retry`` seconds, doubling up to
    ``max_retry_interval``, until ``retry_for`` seconds after the event. The sender polls the
    outbox every ``poll_interval`` seconds (events of its own process wake it at once) and
    sends up to ``concurrency`` deliveries at a time.
    """

    allow_private_addresses: bool = False
    send: bool = True
    timeout: float = 10.0
    first_retry: float = 5.0
    max_retry_interval: float = 900.0
    retry_for: float = 24 * 3600.0
    poll_interval: float = 1.0
    concurrency: int = 4

    def __post_init__(self) -> None:
        for name in ("timeout", "first_retry", "max_retry_interval", "retry_for", "poll_interval"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InvalidInputError(
                    name, f"must be a positive number of seconds; got {value!r}"
                )
        if (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or not 1 <= self.concurrency <= 64
        ):
            raise InvalidInputError(
                "concurrency", f"must be a whole number from 1 to 64; got {self.concurrency!r}"
            )

    @property
    def lease(self) -> timedelta:
        """How long a claim holds: past any attempt's deadline, with room for clock skew."""
        return timedelta(seconds=2 * self.timeout + 5)

    def retry_delay(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones."""
        delay = min(self.first_retry * 2.0 ** min(attempts - 1, 30), self.max_retry_interval)
        return float(delay * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class WebhookCounts:
    """What this process's sender has done since it started."""

    delivered: int = 0  # deliveries answered 2xx
    failed: int = 0  # attempts that failed (each is retried until the delivery is given up)
    gave_up: int = 0  # deliveries given up after retrying for ``retry_for``


@dataclass(frozen=True)
class Attempt:
    """How one attempt went."""

    delivered: bool
    status: int | None
    duration_ms: float
    error: str | None


class WebhookSender:
    """Sends the outbox's due deliveries from a background thread of this process."""

    def __init__(self, store: SQLStore, settings: WebhookSettings, outage: Outage) -> None:
        self.store = store
        self.settings = settings
        self.outage = outage
        # Names this process's leases: host, pid and a random part (pids repeat in containers).
        self.owner = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._counts = WebhookCounts()
        self._retry_at: float | None = None  # time.monotonic() of this sender's next retry
        self._ssl = httpx.create_ssl_context()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None or not self.settings.send:
            return
        self._pool = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="agentguard-webhook"
        )
        self._thread = threading.Thread(
            target=self._run, name="agentguard-webhook-sender", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop: attempts under way finish (each within ``timeout``); leases not yet
        attempted are given back for another sender."""
        self._stop.set()
        if self._thread is None:
            return  # never started: it holds no lease
        self.store.outbox.queued()  # wake the loop
        self._thread.join(self.settings.timeout + 5)
        self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        try:
            self.store.release_deliveries(self.owner)
        except Exception as exc:  # the database is gone: the leases expire on their own
            logger.debug("agentguard: could not give back webhook leases: %s", exc)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counts(self) -> WebhookCounts:
        """Deliveries and failures of this process so far (for metrics)."""
        with self._lock:
            return self._counts

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.send_due()
            except Exception as exc:
                if is_unavailable(exc):
                    self.outage.began(exc)
                else:  # a bug of ours: say so, and keep the sender alive
                    logger.exception("agentguard: the webhook sender failed; retrying")
                busy = False
            if not busy and not self._stop.is_set():
                self.store.outbox.wait(self._idle_for())

    def _idle_for(self) -> float:
        """Seconds to wait for work: the poll interval, or less when a retry of ours is due."""
        wait = self.settings.poll_interval
        with self._lock:
            retry_at, self._retry_at = self._retry_at, None
        if retry_at is not None:
            wait = min(wait, max(retry_at - time.monotonic(), 0.0) + 0.01)
        return wait

    def send_due(self) -> bool:
        """Claim the deliveries due now and send them; whether there were any."""
        now = utcnow()
        if not self.store.deliveries_due(now):
            return False
        claims = self.store.claim_deliveries(
            self.owner, now=now, lease=self.settings.lease, limit=self.settings.concurrency
        )
        if not claims:
            return False
        pool = self._pool
        if pool is None:  # called directly, without start()
            for claim in claims:
                self._deliver(claim)
        else:
            for future in [pool.submit(self._deliver, claim) for claim in claims]:
                future.result()
        return True

    def _deliver(self, claim: Claim) -> None:
        if self._stop.is_set():
            return  # stop() gives the lease back
        attempt = self.attempt(claim)
        at = utcnow()
        delivery = claim.delivery
        attempts = delivery.attempts + 1
        next_at: datetime | None = None
        if not attempt.delivered:
            give_up_at = delivery.created_at + timedelta(seconds=self.settings.retry_for)
            if at < give_up_at:
                delay = timedelta(seconds=self.settings.retry_delay(attempts))
                next_at = min(at + delay, give_up_at)
                retry_at = time.monotonic() + (next_at - at).total_seconds()
                with self._lock:
                    if self._retry_at is None or retry_at < self._retry_at:
                        self._retry_at = retry_at
        recorded = self.store.finish_delivery(
            claim,
            self.owner,
            at=at,
            delivered=attempt.delivered,
            next_attempt_at=next_at,
            response_status=attempt.status,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
        )
        with self._lock:
            c = self._counts
            if attempt.delivered:
                self._counts = WebhookCounts(c.delivered + 1, c.failed, c.gave_up)
            else:
                gave_up = c.gave_up + (1 if next_at is None and recorded else 0)
                self._counts = WebhookCounts(c.delivered, c.failed + 1, gave_up)
        if attempt.delivered or not recorded:
            return
        where = f"webhook {delivery.webhook_id} ({url_host(claim.url)})"
        if next_at is None:
            logger.warning(
                "agentguard: gave up delivering %s %s to %s after %d attempts: %s",
                delivery.event,
                delivery.event_id,
                where,
                attempts,
                attempt.error,
            )
        elif attempts == 1:
            logger.warning(
                "agentguard: could not deliver %s %s to %s: %s; retrying until %s",
                delivery.event,
                delivery.event_id,
                where,
                attempt.error,
                (delivery.created_at + timedelta(seconds=self.settings.retry_for)).isoformat(),
            )

    def attempt(self, claim: Claim) -> Attempt:
        """POST one delivery in its webhook's format; never follows a redirect."""
        started = time.monotonic()
        outgoing = render(
            claim.format,
            secret=claim.secret,
            event_id=claim.delivery.event_id,
            subject=claim.delivery.subject,
            envelope=claim.payload,
            now=utcnow(),
        )
        timeout = self.settings.timeout
        backend = PinnedBackend(
            allow_private=self.settings.allow_private_addresses, deadline=started + timeout
        )
        pool = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=backend,
        )
        status: int | None = None
        error: str | None = None
        try:
            with (
                pool,
                pool.stream(
                    "POST",
                    claim.url,
                    headers=outgoing.headers,
                    content=outgoing.body,
                    extensions={"timeout": dict.fromkeys(_TIMEOUTS, timeout)},
                ) as response,
            ):
                status = response.status
                if not 200 <= status < 300:
                    error = _refusal(response, claim.url)
        except httpcore.TimeoutException as exc:
            error = f"no answer within {timeout:g} s" + (f" ({exc})" if str(exc) else "")
        except httpcore.ConnectError as exc:
            error = f"could not connect to {url_host(claim.url)}: {exc}"
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            error = f"{type(exc).__name__} talking to {url_host(claim.url)}: {exc}"
        except (OSError, ValueError) as exc:  # a host name no resolver takes, a socket error
            error = f"could not send to {url_host(claim.url)}: {type(exc).__name__}: {exc}"
        duration = (time.monotonic() - started) * 1000
        delivered = status is not None and 200 <= status < 300
        return Attempt(delivered, status, round(duration, 1), error)


def _refusal(response: httpcore.Response, url: str) -> str:
    """Why a non-2xx answer failed: its status, the redirect not followed, a bit of its body."""
    status = response.status
    if 300 <= status < 400:
        location = next(
            (v.decode("latin-1") for k, v in response.headers if k.lower() == b"location"), ""
        )
        target = url_host(location) if "://" in location else url_host(url)
        return (
            f"answered {status}, a redirect to {target}; webhooks never follow redirects: "
            "register the final URL"
        )
    body = b""
    for chunk in response.iter_stream():
        body += chunk
        if len(body) >= _BODY_SHOWN:
            break
    text = " ".join(body[:_BODY_SHOWN].decode("utf-8", "replace").split())
    shown = "".join(c for c in text if c.isprintable())
    return f"answered {status}" + (f": {shown}" if shown else "")
