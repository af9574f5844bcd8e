"""Heartbeats: an instance's state, its usage since the last one and its acknowledgements."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import update

from ...protocol import HeartbeatReport
from ...scope import Scope
from ..auth.binding import AgentBinding
from .acks import NewAck, acknowledge
from .instances import InstanceRow, check_owner, lock_instance
from .killstate import check_version
from .rows import Rows
from .tables import instances
from .usage import add_usage


class HeartbeatRows(Rows):
    """Record heartbeats."""

    def record_heartbeat(
        self,
        organization_id: str,
        report: HeartbeatReport,
        *,
        now: datetime,
        acked_at: datetime,
        binding: AgentBinding | None = None,
    ) -> tuple[InstanceRow, list[NewAck]]:
        """Store a heartbeat: the instance's state, its usage since the last one, its acks.

        Raises :class:`VersionAheadError` (and writes nothing) if it claims a version the
        organization has not reached, and :class:`AgentNotAllowedError` (writing nothing) if
        the instance belongs to an agent ``binding`` does not allow.
        """
        with self.database.write() as conn:
            check_version(conn, organization_id, report.version)
            previous = lock_instance(conn, organization_id, report.instance_id, now, acked_at)
            if binding is not None:
                check_owner(binding, previous)
            scope = Scope(
                report.agent_id or previous.agent_id,
                report.run_id or previous.run_id,
                report.mission_id or previous.mission_id,
            )
            values = {
                "agent_id": scope.agent_id,
                "run_id": scope.run_id,
                "mission_id": scope.mission_id,
                "interval_s": report.interval,
                "executed": report.executed,
                "refused": report.refused,
                "failed": report.failed,
                "cancelled": report.cancelled,
                "cost_usd": report.cost_usd,
                "version": max(previous.version, report.version),
                "checkpoint": report.checkpoint or previous.checkpoint,
                "status": report.status,
                "error": report.error,
                "labels": json.dumps(report.labels, sort_keys=True)
                if report.labels
                else previous.labels,
                "last_seen": now,
            }
            conn.execute(
                update(instances)
                .where(
                    instances.c.organization_id == organization_id,
                    instances.c.instance_id == report.instance_id,
                )
                .values(**values)
            )
            delta = (
                max(0, report.executed - previous.executed),
                max(0, report.refused - previous.refused),
                max(0, report.failed - previous.failed),
                max(0.0, report.cost_usd - previous.cost_usd),
            )
            if scope.agent_id and any(delta):
                add_usage(conn, organization_id, scope.agent_id, now, delta)
            row = previous.updated(values)
            acks = acknowledge(
                conn, organization_id, row, previous.version, report.version, acked_at
            )
        return row, acks
