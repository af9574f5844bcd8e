"""Open change streams: how many each server process holds, per organization, as it last said.

Streams live in one process's memory; ``GET /metrics`` must count those of every worker and
replica, so each process writes its counts here every few seconds while it has streams
(:class:`~agentguard.server.hub.StreamHub`), and readers sum the counts written recently.
A process that dies without a word drops out when its rows are no longer recent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, func, select

from .rows import Rows, upsert
from .tables import open_streams


class OpenStreamRows(Rows):
    """Write one process's stream counts; read an organization's total."""

    def record_open_streams(
        self,
        process_id: str,
        counts: Mapping[str, int],
        *,
        now: datetime,
        forget_before: datetime,
    ) -> None:
        """Replace the process's counts (organization -> open streams) with ``counts``.

        Rows of any process not renewed since ``forget_before`` are deleted too.
        """
        t = open_streams.c
        with self.database.write() as conn:
            gone = t.process_id == process_id
            if counts:
                gone = gone & t.organization_id.not_in(sorted(counts))
            conn.execute(delete(open_streams).where(gone | (t.seen_at < forget_before)))
            if counts:
                insert = upsert(conn, open_streams)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[t.process_id, t.organization_id],
                        set_={
                            "streams": insert.excluded.streams,
                            "seen_at": insert.excluded.seen_at,
                        },
                    ),
                    [
                        {
                            "process_id": process_id,
                            "organization_id": org,
                            "streams": n,
                            "seen_at": now,
                        }
                        for org, n in sorted(counts.items())
                    ],
                )

    def forget_open_streams(self, process_id: str) -> None:
        """Delete the process's counts (it is closing)."""
        with self.database.write() as conn:
            conn.execute(delete(open_streams).where(open_streams.c.process_id == process_id))

    def count_open_streams(self, organization_id: str, *, seen_since: datetime) -> int:
        """The organization's open streams on every process that has spoken since ``seen_since``."""
        t = open_streams.c
        with self.database.read() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(t.streams), 0)).where(
                    t.organization_id == organization_id, t.seen_at >= seen_since
                )
            ).scalar_one()
        return int(total)
