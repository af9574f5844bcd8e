"""Acknowledgements: which instance applied which kill, and how long after its commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from ...scope import Scope
from ..auth.binding import ANY_AGENT, AgentBinding, AgentNotAllowedError
from .counters import ACK_LATENCY, bump
from .instances import InstanceRow, check_owner, new_instance
from .killstate import VersionAheadError, version_of
from .rows import Rows, upsert
from .tables import instances, kill_acks, kill_changes, kill_switches

# What an acknowledgement changes in an instance's row.
_ACK_COLUMNS = ("agent_id", "run_id", "mission_id", "version", "last_seen")


@dataclass(frozen=True)
class NewAck:
    """A kill an instance has newly acknowledged."""

    kill_switch_id: str
    target_type: str
    version: int
    latency_ms: float | None


@dataclass(frozen=True)
class AckReport:
    """An instance applied every change of its organization up to ``version``.

    ``now`` is the fleet's clock when the report arrived (health), ``received_at`` real time
    (ack latencies).
    """

    organization_id: str
    instance_id: str
    version: int
    scope: Scope
    now: datetime
    received_at: datetime
    binding: AgentBinding | None = None  # the reporting key's agents; None: any
    # Reports of one group (a batch request) are stored all or none; None: a group of its own.
    group: int | None = None


class RefusedWithGroup(Exception):
    """Not stored: another report of its group (``error``) was refused."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


AckResult = (
    tuple[InstanceRow, list[NewAck]] | VersionAheadError | AgentNotAllowedError | RefusedWithGroup
)


def acknowledge(
    conn: Connection,
    org: str,
    instance: InstanceRow,
    before: int,
    version: int,
    acked_at: datetime,
) -> list[NewAck]:
    """Acknowledge the active kills of versions ``before < v <= version`` that apply."""
    if version <= before:
        return []
    new = _new_acks(_kills_between(conn, org, before, version), instance, before, version, acked_at)
    created = _insert_acks(conn, [(org, instance.instance_id, ack, acked_at) for ack in new])
    return [ack for ack in new if (org, instance.instance_id, ack.kill_switch_id) in created]


class AckRows(Rows):
    """Record acknowledgements (one or many at once) and read those of a kill."""

    def record_ack(
        self,
        organization_id: str,
        instance_id: str,
        version: int,
        scope: Scope,
        *,
        now: datetime,
        acked_at: datetime,
    ) -> tuple[InstanceRow, list[NewAck]]:
        """Store that an instance applied every change up to ``version``; return new acks."""
        (result,) = self.record_acks(
            [AckReport(organization_id, instance_id, version, scope, now, acked_at)]
        )
        if isinstance(result, Exception):
            raise result
        return result

    def record_acks(self, reports: Sequence[AckReport]) -> list[AckResult]:
        """Store many acknowledgements in one transaction (a group commit).

        Per report, in order: the instance's row and the kills it newly acknowledged, or the
        :class:`VersionAheadError` of a report claiming a version its organization has not
        reached, or the :class:`AgentNotAllowedError` of one whose key does not speak for the
        instance's agent (nothing of those is written). Reports of one ``group`` share their
        fate: when one of them is refused, the others get :class:`RefusedWithGroup` and none
        is written. A few statements per organization, whatever the number of reports; instances
        are locked in (organization, instance) order, so concurrent batches (other replicas)
        cannot deadlock.
        """
        results: dict[int, AckResult] = {}
        by_org: dict[str, list[int]] = {}
        for i, report in enumerate(reports):
            by_org.setdefault(report.organization_id, []).append(i)
        with self.database.write() as conn:
            for org in sorted(by_org):
                reached = version_of(conn, org)
                refused: dict[tuple[str, int], Exception] = {}  # group -> its first error
                for i in by_org[org]:
                    if reports[i].version > reached:
                        ahead = VersionAheadError(reports[i].version, reached)
                        results[i] = ahead
                        refused.setdefault(_group(reports[i], i), ahead)
                accepted = [i for i in by_org[org] if _group(reports[i], i) not in refused]
                # Tried, writing nothing, until no group left in is refused; then written.
                # (Only a key bound to some agents can be refused an instance.)
                while accepted and any(_bound(reports[i]) for i in accepted):
                    tried = _propose(conn, org, [reports[i] for i in accepted])
                    culprits = [
                        (i, result)
                        for i, result in zip(accepted, tried, strict=True)
                        if isinstance(result, AgentNotAllowedError)
                    ]
                    if not culprits:
                        break
                    for i, error in culprits:
                        results[i] = error
                        refused.setdefault(_group(reports[i], i), error)
                    accepted = [i for i in accepted if _group(reports[i], i) not in refused]
                for i in by_org[org]:
                    if i not in results and _group(reports[i], i) in refused:
                        results[i] = RefusedWithGroup(refused[_group(reports[i], i)])
                if accepted:
                    recorded = _record_org_acks(conn, org, [reports[i] for i in accepted])
                    results.update(zip(accepted, recorded, strict=True))
        return [results[i] for i in range(len(reports))]

    def kill_acks(
        self, organization_id: str, kill_switch_id: str
    ) -> tuple[int, dict[str, tuple[datetime, float | None]]]:
        """A kill's version and its acknowledgements: instance id -> (when, latency ms)."""
        with self.database.read() as conn:
            version = conn.execute(
                select(kill_changes.c.version).where(
                    kill_changes.c.organization_id == organization_id,
                    kill_changes.c.kill_switch_id == kill_switch_id,
                    kill_changes.c.kind == "kill",
                )
            ).scalar()
            rows = conn.execute(
                select(
                    kill_acks.c.instance_id, kill_acks.c.acknowledged_at, kill_acks.c.latency_ms
                ).where(
                    kill_acks.c.organization_id == organization_id,
                    kill_acks.c.kill_switch_id == kill_switch_id,
                )
            ).all()
        acks = {r.instance_id: (r.acknowledged_at, r.latency_ms) for r in rows}
        return int(version or 0), acks


def _group(report: AckReport, i: int) -> tuple[str, int]:
    """What a report shares its fate with: its group, or itself alone."""
    return ("group", report.group) if report.group is not None else ("report", i)


def _bound(report: AckReport) -> bool:
    """Whether the report's key speaks for some agents only."""
    return report.binding is not None and ANY_AGENT not in report.binding.patterns


def _firsts(reports: Sequence[AckReport]) -> dict[str, AckReport]:
    first: dict[str, AckReport] = {}
    for report in reports:
        first.setdefault(report.instance_id, report)
    return first


def _propose(
    conn: Connection, org: str, reports: list[AckReport]
) -> list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError]:
    """What :func:`_record_org_acks` would answer (the kills left out), writing nothing."""
    first = _firsts(reports)
    rows = _lock_instances(conn, org, first, create=False)
    for instance_id, report in first.items():
        if instance_id not in rows:
            new = new_instance(org, instance_id, report.received_at, report.now)
            values: dict[str, Any] = {f.name: new.get(f.name) for f in fields(InstanceRow)}
            rows[instance_id] = InstanceRow(**values)
    return _plan(reports, rows, [], {})


def _record_org_acks(
    conn: Connection, org: str, reports: list[AckReport]
) -> list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError]:
    """:meth:`AckRows.record_acks` for the valid reports of one organization, in order."""
    rows = _lock_instances(conn, org, _firsts(reports))
    kills = _kills_between(
        conn, org, min(r.version for r in rows.values()), max(r.version for r in reports)
    )
    changed: dict[str, dict[str, Any]] = {}
    proposed = _plan(reports, rows, kills, changed)
    if changed:
        conn.execute(
            update(instances)
            .where(
                instances.c.organization_id == org,
                instances.c.instance_id == bindparam("b_instance_id"),
            )
            .values({column: bindparam(f"b_{column}") for column in _ACK_COLUMNS}),
            [
                {"b_instance_id": instance_id, **{f"b_{c}": values[c] for c in _ACK_COLUMNS}}
                for instance_id, values in changed.items()
            ],
        )
    created = _insert_acks(
        conn,
        [
            (org, result[0].instance_id, ack, report.received_at)
            for report, result in zip(reports, proposed, strict=True)
            if not isinstance(result, AgentNotAllowedError)
            for ack in result[1]
        ],
    )
    return [
        result
        if isinstance(result, AgentNotAllowedError)
        else (
            result[0],
            [
                ack
                for ack in result[1]
                if (org, result[0].instance_id, ack.kill_switch_id) in created
            ],
        )
        for result in proposed
    ]


def _plan(
    reports: list[AckReport],
    rows: dict[str, InstanceRow],
    kills: Sequence[Any],
    changed: dict[str, dict[str, Any]],
) -> list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError]:
    """Per report, in order: the instance's row after it and its new acks, or its refusal.

    ``rows`` and ``changed`` (the columns to write per instance) are updated as it goes.
    """
    proposed: list[tuple[InstanceRow, list[NewAck]] | AgentNotAllowedError] = []
    for report in reports:
        previous = rows[report.instance_id]
        if report.binding is not None:
            try:
                check_owner(report.binding, previous)
            except AgentNotAllowedError as refused:
                proposed.append(refused)
                continue
        values = {
            "agent_id": report.scope.agent_id or previous.agent_id,
            "run_id": report.scope.run_id or previous.run_id,
            "mission_id": report.scope.mission_id or previous.mission_id,
            "version": max(previous.version, report.version),
            "last_seen": report.now,
        }
        row = rows[report.instance_id] = previous.updated(values)
        changed.setdefault(report.instance_id, {}).update(values)
        new = _new_acks(kills, row, previous.version, report.version, report.received_at)
        proposed.append((row, new))
    return proposed


def _lock_instances(
    conn: Connection, org: str, first: Mapping[str, AckReport], *, create: bool = True
) -> dict[str, InstanceRow]:
    """The instances' rows, each created from its first report if new (unless not
    ``create``: then only those that exist), locked until commit."""
    if create:
        conn.execute(
            upsert(conn, instances).on_conflict_do_nothing(
                index_elements=[instances.c.organization_id, instances.c.instance_id]
            ),
            [
                new_instance(org, instance_id, report.received_at, report.now)
                for instance_id, report in sorted(first.items())
            ],
        )
    found = conn.execute(
        select(instances)
        .where(instances.c.organization_id == org, instances.c.instance_id.in_(sorted(first)))
        .order_by(instances.c.instance_id)
        .with_for_update()
    ).all()
    return {row.instance_id: InstanceRow.of(row) for row in found}


def _kills_between(conn: Connection, org: str, before: int, version: int) -> list[Any]:
    """The active kills of versions ``before < v <= version``."""
    if version <= before:
        return []
    kc, ks = kill_changes.c, kill_switches.c
    return list(
        conn.execute(
            select(kc.version, ks.id, ks.target_type, ks.target_id, ks.killed_at)
            .join(kill_switches, ks.id == kc.kill_switch_id)
            .where(
                kc.organization_id == org,
                kc.kind == "kill",
                kc.version > before,
                kc.version <= version,
                ks.is_active,
            )
        ).all()
    )


def _insert_acks(
    conn: Connection, acks: list[tuple[str, str, NewAck, datetime]]
) -> set[tuple[str, str, str]]:
    """Insert (organization, instance, ack, when) rows; the (org, instance, kill) created.

    The latencies of those created go into the acknowledgement latency histogram.
    """
    if not acks:
        return set()
    t = kill_acks.c
    inserted = conn.execute(
        upsert(conn, kill_acks)
        .on_conflict_do_nothing(index_elements=[t.organization_id, t.kill_switch_id, t.instance_id])
        .returning(t.organization_id, t.instance_id, t.kill_switch_id, t.latency_ms),
        [
            {
                "organization_id": org,
                "kill_switch_id": ack.kill_switch_id,
                "instance_id": instance_id,
                "version": ack.version,
                "acknowledged_at": when,
                "latency_ms": ack.latency_ms,
            }
            for org, instance_id, ack, when in acks
        ],
    ).all()
    latencies: dict[str, list[float]] = {}
    for r in inserted:
        if r.latency_ms is not None:
            latencies.setdefault(r.organization_id, []).append(r.latency_ms / 1000)
    for org in sorted(latencies):
        bump(conn, org, ACK_LATENCY.observe(latencies[org]))
    return {(r.organization_id, r.instance_id, r.kill_switch_id) for r in inserted}


def _new_acks(
    kills: Sequence[Any], instance: InstanceRow, before: int, version: int, acked_at: datetime
) -> list[NewAck]:
    """Of ``kills``, those of versions ``before < v <= version`` that apply to the instance."""
    new: list[NewAck] = []
    for kill in kills:
        if not before < kill.version <= version:
            continue
        if not instance.may_run(kill.target_type, kill.target_id):
            continue
        latency = None
        if instance.first_seen <= kill.killed_at:  # it was there when the kill committed
            latency = max(0.0, (acked_at - kill.killed_at).total_seconds() * 1000)
        new.append(NewAck(kill.id, kill.target_type, int(kill.version), latency))
    return new
