"""The service's Prometheus metrics, in a registry of its own (two services in one process, as
in the tests, do not share counters; nothing else in the process leaks into /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Sub-millisecond resolution where decisions are expected, then up past the default deadline.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    """The feature state's size, read when scraped."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        try:
            stats = self._stats()
        except Exception:  # a state that cannot answer now is not a failed scrape
            return []
        keys = GaugeMetricFamily("upi_risk_state_keys", "keys in the online feature state")
        size = GaugeMetricFamily("upi_risk_state_bytes", "bytes held by the online feature state")
        keys.add_metric([], float(stats.get("keys", 0)))
        size.add_metric([], float(stats.get("bytes", 0)))
        return [keys, size]


class ServiceMetrics:
    """Every metric the decision service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "upi_risk_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "upi_risk_decisions",
            "decisions made, by decision and reason code (NONE: no code)",
            ["decision", "reason_code"],
            registry=r,
        )
        self.latency = Histogram(
            "upi_risk_decision_latency_seconds",
            "time from a decision request's arrival to its recorded answer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "upi_risk_decision_stage_seconds",
            "time of the feature and score stage of a decision",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "upi_risk_fallbacks",
            "decisions the fallback made, by cause (no_model, state_error, model_error, deadline)",
            ["cause"],
            registry=r,
        )
        self.idempotent_repeats = Counter(
            "upi_risk_idempotent_repeats",
            "requests answered with a decision recorded before",
            registry=r,
        )
        self.conflicts = Counter(
            "upi_risk_conflicts",
            "requests refused: same transfer_id, different content",
            registry=r,
        )
        self.record_batches = Histogram(
            "upi_risk_record_batch_size",
            "decisions committed together by the group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.record_commit = Histogram(
            "upi_risk_record_commit_seconds",
            "time of one group commit of the decision record",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.state_write_failures = Counter(
            "upi_risk_state_write_failures",
            "recorded decisions the feature state failed to take (restored at the next start)",
            registry=r,
        )
        self.model = Info(
            "upi_risk_model", "the live model and policy the service decides with", registry=r
        )
        self.model_loaded = Gauge(
            "upi_risk_model_loaded", "1 when a model and its policy are loaded", registry=r
        )
        self.model_swaps = Counter("upi_risk_model_swaps", "live models swapped in", registry=r)
        self.model_load_failures = Counter(
            "upi_risk_model_load_failures", "live models that failed to load", registry=r
        )
        self.model.info({"model_version": "none", "policy_version": "none"})

    def watch_state(self, stats: Callable[[], dict[str, int]]) -> None:
        """Export the state's size, asked of `stats()` at each scrape."""
        self.registry.register(_StateCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
