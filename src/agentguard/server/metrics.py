"""What ``GET /metrics`` shows: one organization's kill switch, fleet and counters, for Prometheus.

Every value is read from the database when scraped, so any worker of any replica answers the
whole truth and Prometheus may scrape through a load balancer:

- gauges are counted at scrape time (active kills, instances by health, open streams, whose
  counts each server process writes to the database every few seconds);
- counters and the acknowledgement latency histogram are rows the server adds to in the
  transaction of what they count (:mod:`agentguard.server.store.counters`), so they never go
  down, not across restarts nor when old rows are pruned;
- ``agentguard_database_unavailable`` is 1 when this scrape could not read the database; the
  other metrics are then left out rather than shown in part.

A :class:`MetricSource` adds metrics: ``server.metrics.add(source)``, or in ``KillSwitchServer``
for the server's own. A new counter of events needs no source: declare it in
:mod:`~agentguard.server.store.counters` and ``bump`` it where it happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..records import InterventionType, utcnow
from ..rules import Rule
from ..targets import TARGET_TYPES
from .fleet import Fleet
from .hub import STREAMS_FRESH
from .store.counters import (
    COUNTERS,
    HISTOGRAMS,
    INTERVENTIONS,
    RULE_TRIPS,
    CounterKey,
    StoredCounter,
    StoredHistogram,
    decode_labels,
    encode_labels,
)
from .store.database import Outage, is_unavailable
from .store.sqlstore import SQLStore

DATABASE_UNAVAILABLE = "agentguard_database_unavailable"
PLAIN_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class MetricSource(Protocol):
    """Metric families of one organization (called in a worker thread; may read the database)."""

    def collect(self, organization_id: str) -> Iterable[Metric]: ...


class Metrics:
    """The sources of ``GET /metrics``, collected for the caller's organization."""

    def __init__(self, sources: Iterable[MetricSource], outage: Outage) -> None:
        self.sources = list(sources)
        self._outage = outage

    def add(self, source: MetricSource) -> None:
        """Show ``source``'s metrics too."""
        self.sources.append(source)

    def collect(self, organization_id: str) -> list[Metric]:
        """Every source's families, then whether the database could be read (blocking)."""
        families: list[Metric] = []
        unavailable = 0
        try:
            for source in self.sources:
                families.extend(source.collect(organization_id))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._outage.began(exc)  # logged once per outage
            families, unavailable = [], 1
        families.append(
            GaugeMetricFamily(
                DATABASE_UNAVAILABLE,
                "1 if this scrape could not read the server's database (its other metrics are "
                "then left out), else 0",
                value=unavailable,
            )
        )
        return families

    def exposition(self, organization_id: str, accept: str) -> tuple[bytes, str]:
        """The organization's metrics in the format ``accept`` asks for, and its content type."""
        encode, content_type = _encoder(accept)
        return encode(_Collected(self.collect(organization_id))), content_type


class _Collected:
    """Families already collected, as the ``Collector`` prometheus_client's encoders take."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _encoder(accept: str) -> tuple[Callable[[_Collected], bytes], str]:
    """The Prometheus text format, or OpenMetrics when asked for; plain text if ``accept`` is
    malformed (prometheus_client compares its version numbers and may raise on junk)."""
    try:
        return choose_encoder(accept)
    except (TypeError, ValueError):
        return generate_latest, PLAIN_TEXT


# -- the server's own sources ----------------------------------------------------------------------


class KillMetrics:
    """``agentguard_kills_active``: active kill switches by target type."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def collect(self, organization_id: str) -> Iterable[Metric]:
        counts = self.store.active_kill_counts(organization_id)
        family = GaugeMetricFamily(
            "agentguard_kills_active",
            "Active kill switches, by target type",
            labels=["target_type"],
        )
        for target_type in sorted({*TARGET_TYPES, *counts}):
            family.add_metric([target_type], counts.get(target_type, 0))
        yield family


class FleetMetrics:
    """``agentguard_instances``: instances by health, as ``GET /agents`` judges it."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self, organization_id: str) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "agentguard_instances",
            "Instances of agents by health; active, stale and killed ones are live (crashed and "
            "exited ones count until `agentguard db prune` deletes them)",
            labels=["health"],
        )
        for health, n in sorted(self.fleet.health_counts(organization_id).items()):
            family.add_metric([health], n)
        yield family


class StreamMetrics:
    """``agentguard_streams_open``: open change streams on every server process."""

    def __init__(self, store: SQLStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    def collect(self, organization_id: str) -> Iterable[Metric]:
        since = self.clock() - STREAMS_FRESH
        yield GaugeMetricFamily(
            "agentguard_streams_open",
            "Open change streams (guards, consoles, `agentguard tail`) on every server process "
            "of this database, as each wrote within the last 20 s",
            value=self.store.count_open_streams(organization_id, seen_since=since),
        )


class CounterMetrics:
    """Every stored counter and histogram (:mod:`~agentguard.server.store.counters`).

    ``zeros`` names label values shown as 0 before anything was counted, so ``increase()``
    sees the first event too.
    """

    def __init__(
        self,
        store: SQLStore,
        *,
        counters: Sequence[StoredCounter] = COUNTERS,
        histograms: Sequence[StoredHistogram] = HISTOGRAMS,
        zeros: Mapping[StoredCounter, Iterable[Mapping[str, str]]] | None = None,
    ) -> None:
        self.store = store
        self.counters = counters
        self.histograms = histograms
        self.zeros = {c: [dict(labels) for labels in z] for c, z in (zeros or {}).items()}

    def collect(self, organization_id: str) -> Iterable[Metric]:
        totals = self.store.counter_totals(organization_id)
        for counter in self.counters:
            yield self._counter(counter, totals)
        for histogram in self.histograms:
            yield _histogram(histogram, totals)

    def _counter(self, counter: StoredCounter, totals: Mapping[CounterKey, float]) -> Metric:
        values = {encode_labels(z): 0.0 for z in self.zeros.get(counter, ())}
        values.update({labels: v for (m, labels), v in totals.items() if m == counter.name})
        family = CounterMetricFamily(counter.name, counter.help, labels=list(counter.labels))
        for labels, value in sorted(values.items()):
            decoded = decode_labels(labels)
            family.add_metric([decoded.get(name, "") for name in counter.labels], value)
        return family


def _histogram(histogram: StoredHistogram, totals: Mapping[CounterKey, float]) -> Metric:
    """Stored bucket counts made cumulative, as Prometheus reads them."""
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in histogram.bounds():  # "0.005", "1.0", "+Inf": as Prometheus writes them
        running += totals.get((histogram.bucket_metric, encode_labels({"le": bound})), 0.0)
        buckets.append((bound, running))
    total = totals.get((histogram.sum_metric, encode_labels({})), 0.0)
    return HistogramMetricFamily(histogram.name, histogram.help, buckets=buckets, sum_value=total)


def server_metrics(
    store: SQLStore, fleet: Fleet, outage: Outage, rules: Sequence[Rule] = ()
) -> Metrics:
    """The metrics of a server: kills, fleet, streams and every stored counter."""
    zeros = {
        INTERVENTIONS: [{"type": t.value} for t in InterventionType],
        RULE_TRIPS: [{"rule": r.name, "mode": r.mode} for r in rules],
    }
    return Metrics(
        [
            KillMetrics(store),
            FleetMetrics(fleet),
            StreamMetrics(store),
            CounterMetrics(store, zeros=zeros),
        ],
        outage,
    )
