"""Model-based testing of the kill store: random sequences of kill, revive, check, active and
interventions against a trivial model, on MemoryStore, SQLite and PostgreSQL.

Every example starts two fresh organizations on the same store, so examples cannot see each
other and no database has to be recreated; the second organization checks isolation on the way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from agentguard import AlreadyKilledError, InvalidInputError, NotKilledError
from agentguard.records import Intervention, KillSwitch
from agentguard.server import KillSwitchServer
from agentguard.server.store.tables import kill_switches
from agentguard.store import KillStore, MemoryStore
from support.reliability import STATE_EXAMPLES

TARGETS = [("agent", "bot-a"), ("agent", "bot-b"), ("run", "bot-a"), ("tool", "send_email")]
ACTORS = ["usr_a", "usr_b (key ag_12345678)"]
BASE_TIME = datetime(2026, 4, 18, 17, 0, tzinfo=timezone.utc)
SETTINGS = settings(
    max_examples=STATE_EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

orgs = st.sampled_from([0, 1])
targets = st.sampled_from(TARGETS)
# Any text a database can store: no NUL, no lone surrogates.
reasons = st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
# Input every store must refuse, naming the field, on every backend alike.
BAD_INPUT = st.sampled_from(
    [
        ({"target_type": "robot", "target_id": "x"}, "target_type"),
        ({"target_type": "agent", "target_id": ""}, "target_id"),
        ({"target_type": "agent", "target_id": " \t"}, "target_id"),
        ({"target_type": "agent", "target_id": "x" * 257}, "target_id"),
        ({"target_type": "agent", "target_id": "a\x00b"}, "target_id"),
        ({"target_type": "agent", "target_id": "x", "reason": "r" * 2001}, "reason"),
        ({"target_type": "agent", "target_id": "x", "reason": "nul\x00"}, "reason"),
        ({"target_type": "agent", "target_id": "\ud800"}, "target_id"),
        ({"target_type": "agent", "target_id": "x", "reason": "lone \udfff"}, "reason"),
        ({"target_type": "agent", "target_id": 7}, "target_id"),
    ]
)


def newest_first(rows: list[KillSwitch]) -> list[KillSwitch]:
    """The documented order of ``active``: newest ``killed_at`` first (id breaks ties)."""
    return sorted(sorted(rows, key=lambda ks: ks.id), key=lambda ks: ks.killed_at, reverse=True)


def machine_for(
    store: KillStore,
    *,
    index: Callable[[str], Any] | None = None,
    active_rows: Callable[[], list[tuple[str, str, str, int]]] | None = None,
) -> type[RuleBasedStateMachine]:
    """A state machine comparing ``store`` with the model.

    ``index(org)`` is the server's ``/check`` index, compared too; ``active_rows()`` counts the
    active rows of each (organization, target) straight from the table.
    """

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            prefix = uuid.uuid4().hex[:12]
            self.orgs = [f"org_{prefix}_0", f"org_{prefix}_1"]
            self.active: dict[tuple[str, str, str], KillSwitch] = {}
            self.version = dict.fromkeys(self.orgs, 0)
            self.audit: dict[str, list[tuple[str, str, str, int]]] = {o: [] for o in self.orgs}
            # Interventions of each organization in the order they were first stored.
            self.interventions: dict[str, list[Intervention]] = {o: [] for o in self.orgs}

        # -- changes ---------------------------------------------------------------------------

        @rule(org=orgs, aim=targets, reason=reasons, actor=st.sampled_from(ACTORS))
        def kill(self, org: int, aim: tuple[str, str], reason: str | None, actor: str) -> None:
            target = aim
            o = self.orgs[org]
            key = (o, *target)
            existing = self.active.get(key)
            if existing is not None:
                with pytest.raises(AlreadyKilledError) as refused:
                    store.kill(o, *target, reason=reason, actor=actor)
                assert refused.value.kill_switch == existing
                return
            change = store.kill(o, *target, reason=reason, actor=actor)
            ks = change.kill_switch
            assert change.kind == "kill"
            assert change.version == self.version[o] + 1, "versions must grow by one per change"
            assert (ks.target_type, ks.target_id, ks.organization_id) == (*target, o)
            assert (ks.reason, ks.killed_by, ks.is_active) == (reason, actor, True)
            assert ks.revived_at is None and ks.revived_by is None
            assert all(ks.id != other.id for other in self.active.values())
            self.active[key] = ks
            self._changed(o, "kill", target, change.version)

        @rule(org=orgs, aim=targets, actor=st.sampled_from(ACTORS))
        def revive(self, org: int, aim: tuple[str, str], actor: str) -> None:
            target = aim
            o = self.orgs[org]
            key = (o, *target)
            existing = self.active.get(key)
            if existing is None:
                with pytest.raises(NotKilledError):
                    store.revive(o, *target, actor=actor)
                return
            change = store.revive(o, *target, actor=actor)
            ks = change.kill_switch
            assert change.kind == "revive"
            assert change.version == self.version[o] + 1, "versions must grow by one per change"
            assert ks.id == existing.id and ks.killed_at == existing.killed_at
            assert (ks.is_active, ks.revived_by) == (False, actor)
            assert ks.revived_at is not None and ks.revived_at >= ks.killed_at
            del self.active[key]
            self._changed(o, "revive", target, change.version)

        @rule(org=orgs, bad=BAD_INPUT)
        def bad_kill(self, org: int, bad: tuple[dict[str, Any], str]) -> None:
            body, field = bad
            o = self.orgs[org]
            with pytest.raises(InvalidInputError) as refused:
                store.kill(o, body["target_type"], body["target_id"], reason=body.get("reason"),
                           actor="usr_a")  # fmt: skip
            assert refused.value.field == field
            # Nothing half-written: the invariants below compare versions, audit and state.

        def _changed(self, org: str, action: str, target: tuple[str, str], version: int) -> None:
            self.version[org] = version
            self.audit[org].append((action, *target, version))

        # -- reads -----------------------------------------------------------------------------

        @rule(org=orgs, aim=targets)
        def check(self, org: int, aim: tuple[str, str]) -> None:
            target = aim
            o = self.orgs[org]
            expected = self.active.get((o, *target))
            assert store.get_active(o, *target) == expected
            if index is not None:  # what GET /check answers from
                assert index(o).get(*target) == expected

        @rule(org=orgs, skip=st.integers(0, 5), limit=st.integers(1, 5))
        def active(self, org: int, skip: int, limit: int) -> None:
            o = self.orgs[org]
            mine = newest_first([ks for (owner, *_), ks in self.active.items() if owner == o])
            rows, count = store.list_active(o, skip=skip, limit=limit)
            assert count == len(mine)
            assert rows == mine[skip : skip + limit]

        @rule(
            org=orgs,
            ids=st.lists(st.sampled_from([f"iv-{i}" for i in range(8)]), min_size=1, max_size=4),
            aim=targets,
            minute=st.integers(0, 3),
        )
        def report(self, org: int, ids: list[str], aim: tuple[str, str], minute: int) -> None:
            target = aim
            o = self.orgs[org]
            ks = self.active.get((o, *target))
            batch = [
                Intervention(
                    id=iv_id,
                    action="send_email",
                    target_type=target[0],
                    target_id=target[1],
                    kill_switch_id=ks.id if ks else None,
                    killed_by=ks.killed_by if ks else None,
                    occurred_at=BASE_TIME + timedelta(minutes=minute),
                )
                for iv_id in ids
            ]
            known = {iv.id for iv in self.interventions[o]}
            new = {iv.id: iv for iv in batch if iv.id not in known}
            assert store.add_interventions(o, batch) == len(new)  # idempotent per id
            self.interventions[o].extend(new.values())

        @rule(
            org=orgs,
            aim=st.none() | targets,
            since=st.none() | st.integers(0, 3),
            skip=st.integers(0, 4),
            limit=st.integers(1, 4),
        )
        def list_interventions(
            self,
            org: int,
            aim: tuple[str, str] | None,
            since: int | None,
            skip: int,
            limit: int,
        ) -> None:
            target = aim
            o = self.orgs[org]
            after = None if since is None else BASE_TIME + timedelta(minutes=since)
            matching = [
                iv
                for iv in self.interventions[o]
                if (target is None or (iv.target_type, iv.target_id) == target)
                and (after is None or iv.occurred_at >= after)
            ]
            # Newest first; of equal times, the one stored last first.
            expected = sorted(reversed(matching), key=lambda iv: iv.occurred_at, reverse=True)
            rows, count = store.list_interventions(
                o,
                target_type=target[0] if target else None,
                target_id=target[1] if target else None,
                since=after,
                skip=skip,
                limit=limit,
            )
            assert count == len(expected)
            assert [iv.id for iv in rows] == [iv.id for iv in expected[skip : skip + limit]]

        # -- invariants ------------------------------------------------------------------------

        @invariant()
        def versions_and_audit_follow_the_changes(self) -> None:
            for o in self.orgs:
                snapshot = store.snapshot(o)
                assert snapshot.version == self.version[o]
                assert newest_first(snapshot.active) == newest_first(
                    [ks for (owner, *_), ks in self.active.items() if owner == o]
                )
                entries, count = store.list_audit(o, limit=1000)
                logged = [(e.action, e.target_type, e.target_id, e.version) for e in entries]
                assert count == len(self.audit[o])
                assert logged == list(reversed(self.audit[o]))  # each change once, newest first
                changes = store.changes_since(o, 0)
                assert changes is not None
                assert [c.version for c in changes] == list(range(1, self.version[o] + 1))

        @invariant()
        def at_most_one_active_record_per_target(self) -> None:
            if active_rows is not None:
                doubles = [row for row in active_rows() if row[3] > 1]
                assert doubles == [], f"several active records for one target: {doubles}"

    return StoreMachine


def test_memory_store_matches_the_model() -> None:
    run_state_machine_as_test(machine_for(MemoryStore()), settings=SETTINGS)


# CPU-bound model checking: on a loaded machine, beside the other xdist worker, it has taken 130 s.
@pytest.mark.timeout(300)
def test_sql_store_matches_the_model(
    database_url: str, make_server: Callable[..., KillSwitchServer]
) -> None:
    server = make_server(database_url)
    store = server.store

    def active_rows() -> list[tuple[str, str, str, int]]:
        t = kill_switches.c
        with server.database.read() as conn:
            rows = conn.execute(
                select(t.organization_id, t.target_type, t.target_id, func.count())
                .where(t.is_active)
                .group_by(t.organization_id, t.target_type, t.target_id)
            ).all()
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    run_state_machine_as_test(
        machine_for(store, index=server.index, active_rows=active_rows), settings=SETTINGS
    )
