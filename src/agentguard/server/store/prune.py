"""Pruning: deleting fleet rows nobody has touched for a while."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, func, select

from ...records import utcnow
from .rows import Rows
from .tables import (
    console_sign_outs,
    drill_acks,
    drills,
    instances,
    interventions,
    kill_acks,
    kill_changes,
    ledger_entries,
    usage,
    webhook_deliveries,
)


class PruneRows(Rows):
    """Delete old fleet rows in every organization."""

    def prune(
        self,
        before: datetime,
        *,
        interventions_too: bool = False,
        change_log_too: bool = False,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Delete fleet rows last touched before ``before``, in every organization; the counts.

        Instances not seen since (with their acknowledgements), usage slices and the ids of
        AgentSentinel ledger entries counted (one sent again after that counts again); with
        ``interventions_too`` also interventions received before it; console sign-outs of
        sessions that have expired anyway; and webhook deliveries (sent or given up) queued
        before it; with ``change_log_too`` also change-log rows written before it (a guard
        further behind then resyncs with a full snapshot instead of the changes it missed);
        drills started before it that a newer drill of the same target superseded, with their
        answers (each target's last drill stays). Kill switches, the audit log and checkpoints
        are kept. One transaction: all or nothing; ``dry_run`` counts and deletes nothing.
        """
        acks_of_gone = (
            select(instances.c.instance_id)
            .where(
                instances.c.organization_id == kill_acks.c.organization_id,
                instances.c.instance_id == kill_acks.c.instance_id,
                instances.c.last_seen < before,
            )
            .exists()
        )
        targets = [
            ("acknowledgements", kill_acks, acks_of_gone),
            ("instances", instances, instances.c.last_seen < before),
            ("usage", usage, usage.c.bucket < before),
        ]
        if interventions_too:
            targets.append(("interventions", interventions, interventions.c.received_at < before))
        expired = console_sign_outs.c.expires_at < utcnow()
        targets.append(("expired console sign-outs", console_sign_outs, expired))
        counted = ledger_entries.c.received_at < before
        targets.append(("AgentSentinel ledger entries", ledger_entries, counted))
        d = webhook_deliveries.c
        finished = and_(d.status != "pending", d.created_at < before)
        targets.append(("finished webhook deliveries", webhook_deliveries, finished))
        if change_log_too:
            old_changes = kill_changes.c.created_at < before
            targets.append(("change-log entries", kill_changes, old_changes))
        newer = drills.alias("newer")
        superseded = and_(
            drills.c.status != "running",
            drills.c.started_at < before,
            select(newer.c.id)
            .where(
                newer.c.organization_id == drills.c.organization_id,
                newer.c.target_type == drills.c.target_type,
                newer.c.target_id == drills.c.target_id,
                newer.c.started_at > drills.c.started_at,
            )
            .exists(),
        )
        answers = drill_acks.c.drill_id.in_(select(drills.c.id).where(superseded))
        targets.append(("answers of superseded drills", drill_acks, answers))  # before drills
        targets.append(("superseded drills", drills, superseded))
        counts: dict[str, int] = {}
        with self.database.write() as conn:
            for name, table, where in targets:
                counts[name] = int(
                    conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
                )
                if not dry_run and counts[name]:
                    conn.execute(delete(table).where(where))
        return counts
