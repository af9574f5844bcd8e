"""What the change stream reads from the database: an organization's new interventions."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from sqlalchemy import select

from .database import Database
from .tables import interventions


class InterventionTail:
    """An organization's interventions as they are stored, each read once, oldest first.

    Rows are read by their insertion sequence. On PostgreSQL a transaction can commit after one
    that took a later sequence number, so its rows appear behind the cursor; every row up to the
    cursor is therefore looked at again (sequence numbers only) for ``SETTLE`` seconds, and the
    late ones are read then. SQLite commits in sequence order and needs no second look.
    """

    SETTLE = 10.0  # seconds a transaction may take to commit after a later one (PostgreSQL)
    PAGE = 500

    def __init__(self, database: Database, org: str) -> None:
        self._database = database
        self._org = org
        self._settle = self.SETTLE if database.is_postgres else 0.0
        self._sent: set[int] = set()  # above the floor: sequence numbers read or there before us
        self._marks: deque[tuple[float, int]] = deque()  # (when, cursor then)
        t = interventions
        with self._database.engine.connect() as conn:
            # The latest rows there already count as read; a row below them that commits later
            # (it was in flight as we connected) is then still read, as a late one.
            there = list(
                conn.execute(
                    select(t.c.seq)
                    .where(t.c.organization_id == org)
                    .order_by(t.c.seq.desc())
                    .limit(self.PAGE if self._settle else 1)
                ).scalars()
            )
        self.cursor = there[0] if there else 0  # the highest sequence read or there before us
        # Every row up to the floor has been read or was there before us.
        self._floor = self.cursor
        if self._settle:
            self._sent = set(there)
            self._floor = there[-1] - 1 if len(there) == self.PAGE else 0
        self._settle_up_to(time.monotonic())

    def read(self) -> list[dict[str, Any]]:
        """The intervention rows stored since the last read (blocking: reads the database)."""
        t = interventions
        mine = t.c.organization_id == self._org
        with self._database.engine.connect() as conn:
            late: list[Any] = []
            if self.cursor > self._floor:
                seen = conn.execute(
                    select(t.c.seq).where(mine, t.c.seq > self._floor, t.c.seq <= self.cursor)
                ).scalars()
                missed = sorted(set(seen) - self._sent)
                if missed:
                    late = list(
                        conn.execute(select(t).where(mine, t.c.seq.in_(missed)).order_by(t.c.seq))
                        .mappings()
                        .all()
                    )
            new = (
                conn.execute(
                    select(t).where(mine, t.c.seq > self.cursor).order_by(t.c.seq).limit(self.PAGE)
                )
                .mappings()
                .all()
            )
        rows = [dict(row) for row in [*late, *new]]
        for row in rows:
            self._sent.add(int(row["seq"]))
            self.cursor = max(self.cursor, int(row["seq"]))
        self._settle_up_to(time.monotonic())
        return rows

    def _settle_up_to(self, now: float) -> None:
        self._marks.append((now, self.cursor))
        floor = self._floor
        while self._marks and self._marks[0][0] <= now - self._settle:
            self._floor = max(self._floor, self._marks.popleft()[1])
        if self._floor != floor and self._sent:  # forget what is settled now, once
            self._sent = {seq for seq in self._sent if seq > self._floor}
