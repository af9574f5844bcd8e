"""The in-memory kill index a guard consults on every call."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from .records import KillChange, KillSwitch, Snapshot
from .scope import Scope

logger = logging.getLogger("agentguard")

KillWatcher = Callable[[list[KillSwitch]], object]
"""Told the kills newly applied to an index, in the thread that applied them."""


class KillIndex:
    """Active kill switches of one organization, by target type, at a version.

    Guarded calls read the per-type dicts without a lock (a dict read is atomic); writers
    apply only newer versions, so a late or repeated event can never undo a kill.
    """

    __slots__ = (
        "agent",
        "run",
        "mission",
        "tool",
        "organization",
        "selector",
        "version",
        "revision",
        "fresh_until",
        "synced_at",
        "max_staleness",
        "_write_lock",
        "changed",
        "_watchers",
    )

    def __init__(self) -> None:
        self.agent: dict[str, KillSwitch] = {}
        self.run: dict[str, KillSwitch] = {}
        self.mission: dict[str, KillSwitch] = {}
        self.tool: dict[str, KillSwitch] = {}
        # The organization-wide stop (keyed by the organization's id): refuses every call.
        self.organization: dict[str, KillSwitch] = {}
        # Selector kills, by canonical selector: each guard matches them against its own labels
        # (agentguard.selectors.SelectorView); /check answers them by their selector.
        self.selector: dict[str, KillSwitch] = {}
        self.version = 0
        # Advanced after every write, even one that keeps the version (a snapshot of equal
        # version): a reader that sees the same revision before and after saw the same tables.
        self.revision = 0
        # Monotonic deadline until which this view may be trusted; sources push it forward.
        self.fresh_until = -math.inf
        self.synced_at: float | None = None
        self.max_staleness = 10.0
        self._write_lock = threading.Lock()
        # Notified after every applied change: lets agents wait for a revive without polling.
        self.changed = threading.Condition(self._write_lock)
        self._watchers: tuple[KillWatcher, ...] = ()

    def watch(self, watcher: KillWatcher) -> None:
        """Tell ``watcher`` every kill applied from now on (the calls in flight it stops)."""
        with self._write_lock:
            self._watchers = (*self._watchers, watcher)

    def unwatch(self, watcher: KillWatcher) -> None:
        with self._write_lock:
            self._watchers = tuple(w for w in self._watchers if w != watcher)

    def _tell(self, kills: list[KillSwitch]) -> None:
        for watcher in self._watchers:
            try:
                watcher(kills)
            except Exception:  # stopping calls in flight must not break applying kill state
                logger.exception("agentguard: could not stop the calls a kill applies to")

    def mark_synced(self, now: float) -> None:
        """Record that the view was confirmed current at monotonic time ``now``."""
        self.synced_at = now
        self.fresh_until = now + self.max_staleness

    def mark_authoritative(self) -> None:
        """The view is the source of truth itself (a store in this process): never stale."""
        self.fresh_until = math.inf

    def _table(self, target_type: str) -> dict[str, KillSwitch]:
        table: dict[str, KillSwitch] = getattr(self, target_type)
        return table

    def get(self, target_type: str, target_id: str) -> KillSwitch | None:
        """The active kill switch of a target, if any."""
        return self._table(target_type).get(target_id)

    def blocking(self, scope: Scope) -> KillSwitch | None:
        """The active kill of the scope's mission, run or agent, or the organization-wide stop,
        if any (most specific first)."""
        return (
            (self.mission.get(scope.mission_id) if scope.mission_id else None)
            or (self.run.get(scope.run_id) if scope.run_id else None)
            or (self.agent.get(scope.agent_id) if scope.agent_id else None)
            or self.stopped()
        )

    def stopped(self) -> KillSwitch | None:
        """The organization-wide stop, if one is active."""
        stops = self.organization
        if not stops:
            return None
        return next(iter(tuple(stops.values())), None)  # a copy made in C: atomic under the GIL

    def active(self) -> list[KillSwitch]:
        """Every active kill switch in the index."""
        return [
            *self.mission.values(),
            *self.run.values(),
            *self.agent.values(),
            *self.tool.values(),
            *self.organization.values(),
            *self.selector.values(),
        ]

    def apply(self, change: KillChange) -> bool:
        """Apply one change if it is newer than the index; return whether it was applied.

        A kill is then told to the watchers (after the index has it, outside the lock).
        """
        ks = change.kill_switch
        with self._write_lock:
            if change.version <= self.version:
                return False
            table = self._table(ks.target_type)
            if change.kind == "kill":
                table[ks.target_id] = ks
            else:
                current = table.get(ks.target_id)
                if current is not None and current.id == ks.id:
                    del table[ks.target_id]
            self.version = change.version
            self.revision += 1
            self.changed.notify_all()
            watched = bool(self._watchers) and change.kind == "kill"
        if watched:
            self._tell([ks])
        return True

    def replace(self, snapshot: Snapshot) -> bool:
        """Replace the whole state with a snapshot unless the index is already newer.

        The kills it adds (a resync after missed events) are told to the watchers.
        """
        with self._write_lock:
            if snapshot.version < self.version:
                return False
            added = (
                [
                    ks
                    for ks in snapshot.active
                    if (old := self._table(ks.target_type).get(ks.target_id)) is None
                    or old.id != ks.id
                ]
                if self._watchers
                else []
            )
            self._install(snapshot)
            self.revision += 1
            self.changed.notify_all()
        if added:
            self._tell(added)
        return True

    def _install(self, snapshot: Snapshot) -> None:
        tables: dict[str, dict[str, KillSwitch]] = {
            "agent": {},
            "run": {},
            "mission": {},
            "tool": {},
            "organization": {},
            "selector": {},
        }
        for ks in snapshot.active:
            table = tables.get(ks.target_type)
            if table is not None:  # a target type of a newer server: not ours to enforce
                table[ks.target_id] = ks
        # Each assignment is atomic; a reader sees the old or the new table of each type.
        self.agent, self.run = tables["agent"], tables["run"]
        self.mission, self.tool = tables["mission"], tables["tool"]
        self.organization, self.selector = tables["organization"], tables["selector"]
        self.version = snapshot.version
