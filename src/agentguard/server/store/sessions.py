"""Console sign-outs: the ids of sessions ended before their cookies expire."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from .feed import KEYS_CHANNEL
from .rows import Rows
from .tables import console_sign_outs


class SignOutRows(Rows):
    """The ``console_sign_outs`` table."""

    def is_signed_out(self, session_id: str) -> bool:
        with self.database.read() as conn:
            found = conn.execute(
                select(console_sign_outs.c.session_id).where(
                    console_sign_outs.c.session_id == session_id
                )
            ).first()
        return found is not None

    def sign_out(self, session_id: str, expires: datetime) -> None:
        """Refuse the session until ``expires``, on every replica (idempotent)."""
        try:
            with self.database.write() as conn:
                conn.execute(
                    insert(console_sign_outs).values(session_id=session_id, expires_at=expires)
                )
                # Other processes recheck what relies on sessions (their open streams) on this
                # notice, as on a key's revocation; SQLite ones on seeing the database change.
                self.database.notify(conn, KEYS_CHANNEL, session_id)
        except IntegrityError:
            pass  # signed out already (twice at once, or from a copy of the cookie)

    def signed_out_among(self, session_ids: Iterable[str]) -> set[str]:
        """Those of ``session_ids`` signed out by now, by any process."""
        wanted = set(session_ids)
        if not wanted:
            return set()
        t = console_sign_outs.c
        with self.database.read() as conn:
            return set(conn.execute(select(t.session_id).where(t.session_id.in_(wanted))).scalars())
