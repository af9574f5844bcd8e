"""Time-limited kills: the thread that revives each one when it expires.

Every server process (worker or replica) runs one. Each pass revives, as ``expiry``, the
active kills whose ``expires_at`` has passed (:meth:`SQLStore.expire_due`); a conditional
update lets exactly one process revive each, and the revive then travels like any other:
change log, audit entry, webhooks, every replica's index and every stream. A guard that does
not hear of it (offline) keeps refusing: guards never expire a kill on their own clock.
"""

from __future__ import annotations

import logging
import math
import threading

from ..errors import InvalidInputError
from ..targets import EXPIRY_ACTOR
from ..telemetry import Telemetry
from .store.database import is_unavailable
from .store.sqlstore import SQLStore

logger = logging.getLogger("agentguard.server")

DEFAULT_EXPIRY_INTERVAL = 1.0  # seconds between passes: how late an expiry may be revived


class KillExpiry:
    """Revives expired time-limited kills every ``interval`` seconds, in a daemon thread."""

    def __init__(
        self, store: SQLStore, telemetry: Telemetry, interval: float = DEFAULT_EXPIRY_INTERVAL
    ) -> None:
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise InvalidInputError(
                "expiry_interval", f"must be a positive number of seconds; got {interval!r}"
            )
        self.store = store
        self.telemetry = telemetry
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="agentguard-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def run_once(self) -> int:
        """One pass: revive what has expired, and close the revive requests left unanswered
        too long; return how many kills this process revived."""
        self.store.expire_revive_requests()
        changes = self.store.expire_due()
        for change in changes:
            self.telemetry.record_change(change, actor=EXPIRY_ACTOR)
        return len(changes)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                while self.run_once() >= 100 and not self._stop.is_set():
                    pass  # a backlog: keep going
            except Exception as exc:  # an outage, or a bug: the next pass tries again
                if is_unavailable(exc):
                    logger.debug("agentguard: expiry pass skipped, database unavailable: %s", exc)
                else:
                    logger.exception("agentguard: could not revive expired kills")
