"""Live displays on a terminal: ``kill --wait``'s acknowledgements and ``tail``'s status line.

Piped, each prints the plain lines it always printed.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

import click
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.spinner import Spinner
from rich.text import Text

from ..client import Acks, StreamEvent
from ..wording import plural
from . import output as out


class AcksProgress:
    """``kill --wait`` on stderr: a live bar on a terminal, a line per change when piped."""

    def __init__(self) -> None:
        self.console = out.console(err=True)
        self.started = time.monotonic()
        self._shown: tuple[int, int] | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.console.is_terminal:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                console=self.console,
            )

    def __enter__(self) -> AcksProgress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("waiting for acknowledgements", total=None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, acks: Acks) -> None:
        """Show one poll's answer (the ``progress`` callback of ``Client.wait_for_acks``)."""
        line = out.acks_progress(acks, time.monotonic() - self.started)
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task, description=line, total=acks.live, completed=acks.acknowledged
            )
        elif self._shown != (acks.acknowledged, acks.live):
            click.echo(line, err=True)
        self._shown = (acks.acknowledged, acks.live)


class TailView:
    """``tail``'s output: on a terminal, events above a live status line; piped, plain lines
    (events on stdout, the rest on stderr)."""

    def __init__(self, url: str, *, live: bool) -> None:
        self.url = url
        self.console = out.console()
        self.live = live and self.console.is_terminal and out.is_terminal(sys.stderr)
        self._version: object = None
        self._events = 0
        self._spinner = Spinner("dots", style="cyan")
        self._display = (
            Live(self._spinner, console=self.console, transient=True, refresh_per_second=8)
            if self.live
            else None
        )

    def __enter__(self) -> TailView:
        if self._display is not None:
            self._refresh()
            self._display.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._display is not None:
            self._display.stop()

    def snapshot(self, event: StreamEvent) -> None:
        words = out.snapshot(event, self.url)
        if self._display is None:
            click.echo(words + " (Ctrl-C to stop)", err=True)
            return
        self.console.print(Text(words, style="dim"))
        self._version = event.data.get("version")
        self._refresh()

    def event(self, event: StreamEvent) -> None:
        line = out.stream_event(event)
        if line is None:
            return
        if self._display is None:
            click.echo(line.plain)
            return
        self.console.print(line)
        self._events += 1
        self._version = event.data.get("version", self._version)
        self._refresh()

    def notice(self, text: str) -> None:
        """A reconnection or a catch-up: stderr when piped."""
        if self._display is None:
            click.echo(text, err=True)
        else:
            self.console.print(Text(text, style="yellow"))

    def _refresh(self) -> None:
        version = "" if self._version is None else f" at version {self._version}"
        self._spinner.update(
            text=Text.assemble(
                f"watching {self.url}{version}: {plural(self._events, 'event')} shown  ",
                ("Ctrl-C to stop", "dim"),
            )
        )
