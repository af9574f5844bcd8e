"""``tail``: kills, revives and refused calls as they happen, from the server's change stream."""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ..client import Client, StreamEvent
from ..errors import AgentGuardError, AuthenticationError, InvalidInputError, PermissionDeniedError
from ..protocol import RESUMED_EVENT
from ..wording import plural
from .live import TailView
from .options import Seconds, remote

STREAMED = ("kill", "revive", "intervention")  # the events --count counts


CATCH_UP_MARGIN = timedelta(minutes=1)
_SEEN_LIMIT = 10_000


def _first_sight(seen: dict[str, None], data: dict[str, Any]) -> bool:
    """Remember an intervention's id; False if it was already shown.

    A dict is an insertion-ordered set; bounding it takes two lines, not a cache library.
    """
    key = str(data.get("id"))
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > _SEEN_LIMIT:
        del seen[next(iter(seen))]
    return True


class _Feed:
    """Reads the change stream on a thread, reconnecting with Last-Event-ID after a loss.

    The queue carries events, notices (str) and, last, the error that ended the feed.
    """

    def __init__(self, client: Client, *, interventions: bool) -> None:
        self.client = client
        self.interventions = interventions
        self.items: queue.Queue[StreamEvent | str | Exception] = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentguard-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_id: str | None = None
        connected = False
        # Backoff by hand rather than tenacity's: the wait must end at once on stop(), the
        # delay starts over once events flow again, and each loss is told to the user.
        delay = 0.5
        lost_at: datetime | None = None
        seen: dict[str, None] = {}  # ids of the latest interventions shown, oldest first

        def opened() -> None:
            nonlocal lost_at
            if lost_at is not None and self.interventions:
                self._catch_up(lost_at, seen)
            lost_at = None

        while not self._stopped.is_set():
            try:
                for event in self.client.events(
                    interventions=self.interventions, last_event_id=last_id, on_open=opened
                ):
                    connected, delay = True, 0.5
                    last_id = event.id or last_id
                    if event.event == "intervention" and not _first_sight(seen, event.data):
                        continue
                    self.items.put(event)
            except (AuthenticationError, PermissionDeniedError, InvalidInputError) as exc:
                self.items.put(exc)
                return
            except AgentGuardError as exc:
                if self._stopped.is_set():
                    return
                if not connected:
                    self.items.put(exc)
                    return
                lost_at = lost_at or datetime.now(timezone.utc)
                self.items.put(f"stream lost ({exc}); reconnecting in {delay:g} s")
                self._stopped.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # a bug: end the command with it rather than hang
                self.items.put(exc)
                return

    def _catch_up(self, lost_at: datetime, seen: dict[str, None]) -> None:
        """Show the interventions stored while the stream was away (and not shown yet).

        Read by when they occurred, from a minute before the loss: guards send refusals in
        batches about every second, later when the server was unreachable for them too.
        """
        since = lost_at - CATCH_UP_MARGIN
        try:
            page = self.client.interventions(since=since, limit=1000)
        except AgentGuardError as exc:
            self.items.put(f"could not read the interventions stored while reconnecting: {exc}")
            return
        missed = 0
        for item in reversed(page.data):  # oldest first, as the stream sends them
            data = item.model_dump(mode="json")
            if _first_sight(seen, data):
                self.items.put(StreamEvent("intervention", None, data))
                missed += 1
        if missed:
            self.items.put(f"stream back; {missed} intervention(s) stored meanwhile shown above")

    def next(self, timeout: float | None) -> StreamEvent | str | Exception | None:
        """The next item, or ``None`` after ``timeout`` seconds."""
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._stopped.set()
        self.client.close()


@click.command()
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after N kill, revive or intervention events."
)
@click.option("--timeout", type=Seconds(min=0, min_open=True), help="Stop after this many seconds.")
@click.option(
    "--interventions/--no-interventions",
    default=True,
    show_default=True,
    help="Also stream refused calls.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
@remote
def tail(
    client: Client, count: int | None, timeout: float | None, interventions: bool, as_json: bool
) -> None:
    """Stream kills, revives and refused calls live, until Ctrl-C.

    With --json each line is {"event", "id", "data"}, the snapshot of active kill switches
    first. For scripts, --count and --timeout end the stream; the exit code is 1 if --count
    events did not arrive within --timeout.
    """
    feed = _Feed(client, interventions=interventions)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    try:
        with TailView(client.url, live=not as_json) as view:
            while count is None or seen < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                item = feed.next(remaining)
                if item is None:
                    continue
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, str):
                    view.notice(item)
                    continue
                if item.event == RESUMED_EVENT:  # after a reconnect: the missed ones were shown
                    continue
                if as_json:
                    click.echo(json.dumps({"event": item.event, "id": item.id, "data": item.data}))
                elif item.event == "snapshot":
                    view.snapshot(item)
                else:
                    view.event(item)
                if item.event in STREAMED:
                    seen += 1
    except KeyboardInterrupt:
        return
    finally:
        feed.stop()
    if count is not None and seen < count:
        raise click.ClickException(f"{seen} of {plural(count, 'event')} within {timeout:g} s")


COMMANDS = (tail,)
