"""The in-memory kill index a guard consults on every call.

Every guard holds its organization's whole kill state, so each active kill is kept compactly
(about 250 bytes with its target id and a reason it shares with other kills): a :class:`Kill`
tuple of the id and the time packed into one ``bytes``, the reason and the killer (kills of one
snapshot, or applied close together, that have the same share one string).
What a refusal needs is all there, so a refusal names who killed what, when and why with the
server out of reach; :meth:`KillIndex.get` and friends give it back as a :class:`KillSwitch`.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import cast

from .records import KillChange, KillSwitch, Snapshot
from .scope import Scope

logger = logging.getLogger("agentguard")

_TARGET_TABLES = frozenset({"agent", "run", "mission", "tool"})  # kept compactly (Kill)
_TABLES = _TARGET_TABLES | {"organization", "selector"}

KillWatcher = Callable[[list[KillSwitch]], object]
"""Told the kills newly applied to an index, in the thread that applied them."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROS = struct.Struct("<q")
_RECENT = 256  # reasons and killers of kills applied one by one, remembered for sharing


class Kill(tuple):  # type: ignore[type-arg]
    """An active kill as an index keeps it: ``(packed id and time, reason, killed_by)``.

    The id is a UUID's 16 bytes and the time microseconds since the epoch (UTC), packed in
    one ``bytes``; equal reasons and killers are one string (through ``shared``). The target
    is the table's key.
    """

    __slots__ = ()

    @classmethod
    def of(cls, ks: KillSwitch, shared: dict[str, str]) -> Kill | KillSwitch:
        """The compact form of ``ks``; ``ks`` itself if its id is no UUID or its time naive,
        if it is time-limited (the tuple has no room for ``expires_at``), or if it is an
        organization-wide stop or a selector kill (few, and read whole).

        ``shared`` maps each reason and killer seen to the one string kept for it.
        """
        killed_at, kill_id = ks.killed_at, ks.id
        if (
            ks.target_type not in _TARGET_TABLES
            or ks.expires_at is not None
            or killed_at.tzinfo is None
            or not _looks_like_uuid(kill_id)
        ):
            return ks
        try:
            raw = uuid.UUID(kill_id).bytes
        except ValueError:
            return ks
        micros = (killed_at - _EPOCH) // timedelta(microseconds=1)
        packed = raw + _MICROS.pack(micros)
        reason = None if ks.reason is None else shared.setdefault(ks.reason, ks.reason)
        return cls((packed, reason, shared.setdefault(ks.killed_by, ks.killed_by)))

    @property
    def id(self) -> str:
        return str(uuid.UUID(bytes=self[0][:16]))

    @property
    def killed_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=_MICROS.unpack_from(self[0], 16)[0])

    def kill_switch(self, target_type: str, target_id: str, organization_id: str) -> KillSwitch:
        """The kill switch record this stands for (active)."""
        return KillSwitch.model_construct(
            id=self.id,
            target_type=target_type,
            target_id=target_id,
            reason=self[1],
            is_active=True,
            killed_by=self[2],
            killed_at=self.killed_at,
            revived_by=None,
            revived_at=None,
            organization_id=organization_id,
        )


Entry = Kill | KillSwitch
"""What an index table holds for a target."""


def _looks_like_uuid(value: str) -> bool:
    """The canonical form ``str(uuid.UUID(...))`` gives back (lowercase, hyphenated)."""
    return (
        len(value) == 36
        and value[8] == value[13] == value[18] == value[23] == "-"
        and value == value.lower()
    )


def _id_of(entry: Entry) -> str:
    return entry.id


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
        "organization_id",
        "_recent",
    )

    def __init__(self) -> None:
        # Target id -> its active kill (a :class:`Kill`, or a :class:`KillSwitch` whose id is
        # no UUID): a guarded call reads these; a found entry is a kill.
        self.agent: dict[str, Entry] = {}
        self.run: dict[str, Entry] = {}
        self.mission: dict[str, Entry] = {}
        self.tool: dict[str, Entry] = {}
        # The organization-wide stop (keyed by the organization's id): refuses every call.
        # Kept as KillSwitch records, as selector kills are (few, and read whole).
        self.organization: dict[str, KillSwitch] = {}
        # Selector kills, by canonical selector: each guard matches them against its own labels
        # (agentguard.selectors.SelectorView); /check answers them by their selector.
        self.selector: dict[str, KillSwitch] = {}
        self.organization_id = ""  # of the kills applied (every kill names it)
        self._recent: dict[str, str] = {}  # the strings of kills applied lately, to share
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

    def _table(self, target_type: str) -> dict[str, Entry]:
        table: dict[str, Entry] = getattr(self, target_type)
        return table

    def record(self, target_type: str, target_id: str, entry: Entry | None) -> KillSwitch | None:
        """The kill switch an entry of the ``target_type`` table stands for."""
        if entry is None or isinstance(entry, KillSwitch):
            return entry
        return entry.kill_switch(target_type, target_id, self.organization_id)

    def get(self, target_type: str, target_id: str) -> KillSwitch | None:
        """The active kill switch of a target, if any."""
        return self.record(target_type, target_id, self._table(target_type).get(target_id))

    def blocking(self, scope: Scope) -> KillSwitch | None:
        """The active kill of the scope's mission, run or agent, or the organization-wide stop,
        if any (most specific first)."""
        for target_type, target_id, table in (
            ("mission", scope.mission_id, self.mission),
            ("run", scope.run_id, self.run),
            ("agent", scope.agent_id, self.agent),
        ):
            if target_id:
                entry = table.get(target_id)
                if entry is not None:
                    return self.record(target_type, target_id, entry)
        return self.stopped()

    def stopped(self) -> KillSwitch | None:
        """The organization-wide stop, if one is active."""
        stops = self.organization
        if not stops:
            return None
        return next(iter(tuple(stops.values())), None)  # a copy made in C: atomic under the GIL

    def active(self) -> list[KillSwitch]:
        """Every active kill switch in the index."""
        return [
            self.record(target_type, target_id, entry)  # type: ignore[misc]
            for target_type in ("mission", "run", "agent", "tool", "organization", "selector")
            for target_id, entry in list(self._table(target_type).items())
        ]

    def apply(self, change: KillChange) -> bool:
        """Apply one change if it is newer than the index; return whether it was applied.

        A kill is then told to the watchers (after the index has it, outside the lock).
        """
        ks = change.kill_switch
        with self._write_lock:
            if change.version <= self.version:
                return False
            # A target type of a newer server is not ours to enforce: its version still counts.
            table = self._table(ks.target_type) if ks.target_type in _TABLES else {}
            if change.kind == "kill":
                if len(self._recent) > _RECENT:
                    self._recent = {}
                table[ks.target_id] = Kill.of(ks, self._recent)
            else:
                current = table.get(ks.target_id)
                if current is not None and _id_of(current) == ks.id:
                    del table[ks.target_id]
            self.organization_id = ks.organization_id
            self.version = change.version
            self.revision += 1
            self.changed.notify_all()
            watched = bool(self._watchers) and change.kind == "kill"
        if watched:
            self._tell([ks])
        return True

    def rehearse(self, target_type: str, target_id: str) -> bool:
        """Go through applying a kill of the target without applying it: a drill.

        Takes the write lock a kill takes and finds the table the kill would go into, then
        changes nothing: no table, version or revision moves, no watcher is told, so no
        guarded call is refused or stopped. Whether the index could have applied the kill.
        """
        if target_type not in _TARGET_TABLES or not target_id:
            return False
        with self._write_lock:
            self._table(target_type)
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
                    or _id_of(old) != ks.id
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
        tables: dict[str, dict[str, Entry]] = {
            "agent": {},
            "run": {},
            "mission": {},
            "tool": {},
            "organization": {},
            "selector": {},
        }
        shared: dict[str, str] = {}  # for the install only: nothing kept but the strings
        for ks in snapshot.active:
            table = tables.get(ks.target_type)
            if table is not None:  # a target type of a newer server: not ours to enforce
                table[ks.target_id] = Kill.of(ks, shared)
        self.organization_id = snapshot.organization_id
        # Each assignment is atomic; a reader sees the old or the new table of each type.
        self.agent, self.run = tables["agent"], tables["run"]
        self.mission, self.tool = tables["mission"], tables["tool"]
        # Kill.of keeps organization-wide stops and selector kills whole (KillSwitch records).
        self.organization = cast("dict[str, KillSwitch]", tables["organization"])
        self.selector = cast("dict[str, KillSwitch]", tables["selector"])
        self.version = snapshot.version
