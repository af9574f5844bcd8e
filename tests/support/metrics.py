"""Reading ``GET /metrics`` back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """Every sample of an exposition: sample name -> (sorted label pairs) -> value.

    Fails if the text does not parse, or if a family's type is not the one agentguard gives it.
    """
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == TYPES.get(family.name, family.type), (family.name, family.type)
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


TYPES = {
    "agentguard_kills_active": "gauge",
    "agentguard_instances": "gauge",
    "agentguard_streams_open": "gauge",
    "agentguard_interventions": "counter",
    "agentguard_rule_trips": "counter",
    "agentguard_webhook_deliveries": "counter",
    "agentguard_webhook_failures": "counter",
    "agentguard_webhook_given_up": "counter",
    "agentguard_ack_latency_seconds": "histogram",
    "agentguard_database_unavailable": "gauge",
}


def by_label(samples: dict[str, dict[Labels, float]], name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` keyed by one label's value."""
    return {dict(labels)[label]: value for labels, value in samples.get(name, {}).items()}


def histogram(
    samples: dict[str, dict[Labels, float]], name: str
) -> tuple[dict[float, float], float, float]:
    """A histogram's cumulative buckets (bound -> count), its count and its sum."""
    buckets = {float(dict(labels)["le"]): v for labels, v in samples[f"{name}_bucket"].items()}
    return buckets, samples[f"{name}_count"][()], samples[f"{name}_sum"][()]


def expected_buckets(bounds: list[float], observations: list[float]) -> dict[float, float]:
    """The cumulative bucket counts a histogram with ``bounds`` has after ``observations``."""
    return {b: float(sum(1 for o in observations if o <= b)) for b in bounds}
