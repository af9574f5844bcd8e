"""Counters of events, added to in the transaction of what they count.

``GET /metrics`` reads them, so every worker and replica answers the same totals; a write that
rolls back counts nothing, and a total never goes down (``agentguard db prune`` leaves them as
they are). Each counter is split over :data:`SHARDS` rows, one picked at random per
transaction, so concurrent writers of one organization rarely wait on the same row.

To count something new, declare a :class:`StoredCounter` here, add it to :data:`COUNTERS`, and
call :func:`bump` in the transaction that writes what it counts: ``/metrics`` shows it with no
other change. Bump last in a transaction (no other row lock taken after it), so no two
transactions can wait on each other through these rows.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from .rows import Rows, upsert
from .tables import metric_counters

SHARDS = 8
RULE_ACTOR = "rule:"  # a rule's kills and observations are recorded as "rule:<name>"

# (metric, labels as canonical JSON): one counter's row key, shards aside.
CounterKey = tuple[str, str]


def encode_labels(labels: Mapping[str, str]) -> str:
    """Labels as stored: JSON with sorted keys, no spaces."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_labels(text: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(text).items()}


@dataclass(frozen=True)
class StoredCounter:
    """A counter of events: its Prometheus name (without ``_total``), help and label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()

    def key(self, **labels: str) -> CounterKey:
        """The row key of this counter with these label values (every label, no other)."""
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes the labels {self.labels}; got {sorted(labels)}")
        return self.name, encode_labels(labels)


@dataclass(frozen=True)
class StoredHistogram:
    """A histogram of observations: a count per bucket (not cumulative) and their sum."""

    name: str
    help: str
    buckets: tuple[float, ...]  # upper bounds, ascending; +Inf is implied

    @property
    def bucket_metric(self) -> str:
        return f"{self.name}_bucket"

    @property
    def sum_metric(self) -> str:
        return f"{self.name}_sum"

    def bounds(self) -> list[str]:
        """The stored ``le`` label of each bucket, in order, +Inf last."""
        return [repr(float(b)) for b in self.buckets] + ["+Inf"]

    def observe(self, values: Iterable[float]) -> dict[CounterKey, float]:
        """What observing ``values`` adds: one to each one's bucket, and each to the sum."""
        counts: Counter[CounterKey] = Counter()
        total = 0.0
        bounds = self.bounds()
        for value in values:
            index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            counts[self.bucket_metric, encode_labels({"le": bounds[index]})] += 1
            total += value
        if not counts:
            return {}
        return {**counts, (self.sum_metric, encode_labels({})): total}


INTERVENTIONS = StoredCounter(
    "agentguard_interventions",
    "Interventions stored, by type (HARD_BLOCK: a refused call; OBSERVED: an observe-mode rule "
    "tripped; UNAVAILABLE: refused while kill state was unavailable; CANCELLED: a call in "
    "flight stopped by a kill)",
    ("type",),
)
RULE_TRIPS = StoredCounter(
    "agentguard_rule_trips",
    "Rule trips the server recorded: kills by a rule (mode enforce: server rules and in-process "
    "guards' rules) and server rules' observations (mode observe)",
    ("rule", "mode"),
)
ACK_LATENCY = StoredHistogram(
    "agentguard_ack_latency_seconds",
    "Seconds from a kill's commit to each instance's acknowledgement of it (instances there "
    "when it committed)",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WEBHOOK_DELIVERIES = StoredCounter(
    "agentguard_webhook_deliveries",
    "Webhook deliveries the endpoint answered with 2xx, by webhook id, format and event",
    ("webhook", "format", "event"),
)
WEBHOOK_FAILURES = StoredCounter(
    "agentguard_webhook_failures",
    "Webhook delivery attempts that failed (an error, a timeout or a non-2xx answer; each is "
    "retried until the delivery is given up), by webhook id, format and event",
    ("webhook", "format", "event"),
)
WEBHOOK_GIVEN_UP = StoredCounter(
    "agentguard_webhook_given_up",
    "Webhook deliveries given up after retrying for the retry period, by webhook id, format "
    "and event",
    ("webhook", "format", "event"),
)
COUNTERS: tuple[StoredCounter, ...] = (
    INTERVENTIONS,
    RULE_TRIPS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_FAILURES,
    WEBHOOK_GIVEN_UP,
)
HISTOGRAMS: tuple[StoredHistogram, ...] = (ACK_LATENCY,)


def rule_of(actor: str) -> str | None:
    """The rule's name if ``actor`` is a rule (``rule:<name>``)."""
    if actor.startswith(RULE_ACTOR) and len(actor) > len(RULE_ACTOR):
        return actor[len(RULE_ACTOR) :]
    return None


def bump(conn: Connection, organization_id: str, amounts: Mapping[CounterKey, float]) -> None:
    """Add to counters inside the caller's transaction (rows in key order, one shard)."""
    rows = [
        {
            "organization_id": organization_id,
            "metric": metric,
            "labels": labels,
            "shard": 0,
            "value": float(amount),
        }
        for (metric, labels), amount in sorted(amounts.items())
        if amount and math.isfinite(amount)
    ]
    if not rows:
        return
    shard = random.randrange(SHARDS)
    for row in rows:
        row["shard"] = shard
    insert = upsert(conn, metric_counters)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[
                metric_counters.c.organization_id,
                metric_counters.c.metric,
                metric_counters.c.labels,
                metric_counters.c.shard,
            ],
            set_={"value": metric_counters.c.value + insert.excluded.value},
        ),
        rows,
    )


class CounterRows(Rows):
    """Read an organization's counters."""

    def counter_totals(self, organization_id: str) -> dict[CounterKey, float]:
        """Every counter of the organization, its shards summed."""
        t = metric_counters.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(t.metric, t.labels, func.sum(t.value))
                .where(t.organization_id == organization_id)
                .group_by(t.metric, t.labels)
            ).all()
        return {(metric, labels): float(total) for metric, labels, total in rows}
