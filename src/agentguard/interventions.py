"""Recording interventions off the caller's critical path."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from .errors import InvalidInputError
from .records import Intervention
from .wording import one_line, plural

logger = logging.getLogger("agentguard")

STILL_FAILING_AFTER = 60.0  # seconds of failed deliveries before an error is logged (once)

InterventionSink = Callable[[list[Intervention], int], None]
"""Called with a batch and how many interventions were dropped since the last accepted batch."""


class InterventionRecorder:
    """A bounded buffer drained by a background thread into a sink, in batches.

    ``submit`` never blocks on I/O. A sink that raises is retried with backoff, the batch kept;
    re-sending is safe because every intervention carries its own id. When the buffer is full
    the newest intervention is dropped, counted in ``dropped``, logged, and reported to the sink
    with the next batch.
    """

    def __init__(
        self,
        sink: InterventionSink,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 1000,
        interval: float = 0.0,
        name: str = "agentguard-interventions",
    ) -> None:
        self._sink = sink
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._interval = interval
        self._name = name
        self._buffer: deque[Intervention] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._hurry = False  # a flush wants delivery now: cut the interval or backoff short
        self.dropped = 0
        self.refused = 0  # refused by the server (422 naming the item): dropped, never retried
        self._dropped_unreported = 0
        self.sent = 0
        _recorders.add(self)

    def submit(self, item: Intervention) -> None:
        """Queue one intervention for the sink."""
        with self._cond:
            if len(self._buffer) + self._in_flight >= self._max_buffer:
                self.dropped += 1
                self._dropped_unreported += 1
                logger.error(
                    "agentguard: intervention buffer full (%d); dropped intervention %s "
                    "(%d dropped so far)",
                    self._max_buffer,
                    item.id,
                    self.dropped,
                )
                return
            self._buffer.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if len(self._buffer) in (1, self._batch_size):  # work, or a full batch, waits
                self._cond.notify_all()

    def pending(self) -> int:
        """Interventions not yet accepted by the sink."""
        with self._cond:
            return len(self._buffer) + self._in_flight

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued intervention reached the sink; return whether it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the background thread."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not flushed and self._buffer:
            logger.error(
                "agentguard: %s could not be delivered before close",
                plural(len(self._buffer), "intervention"),
            )
        return flushed

    def _pause(self, seconds: float, *, until_full: bool = False) -> None:
        """Wait (holding the condition) unless a flush or close asks for delivery now, or,
        with ``until_full``, a whole batch is waiting.

        Each new submission must not end it: under load that would turn batching and backoff
        into a request per refusal.
        """
        deadline = time.monotonic() + seconds
        while not self._hurry and not self._closed:
            if until_full and len(self._buffer) >= self._batch_size:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _retry_later(
        self, batch: list[Intervention], exc: Exception, backoff: float, loud: bool
    ) -> None:
        """Put the batch back and wait ``backoff``: one log line, the traceback only at DEBUG."""
        logger.log(
            logging.WARNING if loud else logging.DEBUG,
            "agentguard: could not deliver %s (%s); keeping them and retrying in %.1f s",
            plural(len(batch), "intervention"),
            one_line(exc),
            backoff,
        )
        logger.debug("agentguard: intervention delivery failed", exc_info=True)
        with self._cond:
            self._buffer.extendleft(reversed(batch))
            self._in_flight = 0
            self._cond.notify_all()
            self._pause(backoff)

    def _run(self) -> None:
        # The loop keeps its own backoff rather than tenacity's: it waits on the buffer's
        # condition (a flush or close cuts the wait short) and keeps retrying without a bound,
        # since giving up would lose interventions. Failures are logged once, not per attempt.
        backoff = 0.5
        failing_since: float | None = None
        complained = False
        while True:
            with self._cond:
                while not self._buffer and not self._closed:
                    self._cond.wait()
                if self._closed and (not self._buffer or backoff > 0.5):
                    return
                if self._interval:
                    self._pause(self._interval, until_full=True)
                self._hurry = False
                batch = [
                    self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
                ]
                self._in_flight = len(batch)
                dropped = self._dropped_unreported
            try:
                self._sink(batch, dropped)
            except Exception as exc:
                refused = (
                    _refused_item(exc.field, len(batch))
                    if isinstance(exc, InvalidInputError)
                    else None
                )
                if refused is not None:
                    # The server will never take this one (an id a framework gave, say): drop
                    # it, send the rest now, rather than retry the whole batch for ever.
                    item = batch.pop(refused)
                    logger.error(
                        "agentguard: the server refused intervention %s, dropped: %s",
                        item.id,
                        one_line(exc),
                    )
                    with self._cond:
                        self.refused += 1
                        self._buffer.extendleft(reversed(batch))
                        self._in_flight = 0
                        self._cond.notify_all()
                    continue
                # Logged once while the server is away or refusing, then at DEBUG.
                now = time.monotonic()
                self._retry_later(batch, exc, backoff, loud=failing_since is None)
                failing_since = failing_since or now
                if not complained and now - failing_since > STILL_FAILING_AFTER:
                    complained = True
                    logger.error(
                        "agentguard: interventions undelivered for %.0f s (%s); %d kept, "
                        "still retrying",
                        now - failing_since,
                        one_line(exc),
                        len(self._buffer),
                    )
                backoff = min(backoff * 2, 30.0)
                continue
            if failing_since is not None:
                logger.warning(
                    "agentguard: interventions delivered again after %.1f s",
                    time.monotonic() - failing_since,
                )
            backoff, failing_since, complained = 0.5, None, False
            with self._cond:
                self._dropped_unreported -= dropped
                self.sent += len(batch)
                self._in_flight = 0
                self._cond.notify_all()


def _refused_item(field: str, size: int) -> int | None:
    """The index of the item a 422 names (``interventions.3.agent_id``), if it names one."""
    parts = field.split(".")
    if len(parts) >= 2 and parts[0] == "interventions" and parts[1].isdigit():
        index = int(parts[1])
        return index if index < size else None
    return None


_recorders: weakref.WeakSet[InterventionRecorder] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for recorder in list(_recorders):
        recorder.close(timeout=2.0)
