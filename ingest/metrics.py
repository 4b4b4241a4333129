"""Ingest counters, exposed in Prometheus format and as a plain snapshot for tests and replay."""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from ingest.decode import REJECTION_REASONS


class IngestMetrics:
    """One registry per pipeline, so several pipelines (tests, workers) never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = PromCounter(
            "carewatch_messages_received", "Messages taken from the inbox", registry=r
        )
        self.accepted = PromCounter(
            "carewatch_messages_accepted", "Messages with samples kept", registry=r
        )
        self.samples = PromCounter("carewatch_samples_accepted", "Samples stored", registry=r)
        self.duplicates = PromCounter(
            "carewatch_samples_duplicate", "Samples already seen", registry=r
        )
        self.future = PromCounter(
            "carewatch_samples_future_ts", "Samples dropped for a ts > 5 min ahead", registry=r
        )
        self.rejected = PromCounter(
            "carewatch_messages_rejected", "Messages refused whole", ["reason"], registry=r
        )
        self.faults = PromCounter(
            "carewatch_sensor_faults", "Values outside the plausible range", ["field"], registry=r
        )
        self.status = PromCounter("carewatch_status_messages", "Device status messages", registry=r)
        self.inbox_depth = Gauge("carewatch_inbox_depth", "Messages waiting for decode", registry=r)
        self.inbox_dropped = Gauge(
            "carewatch_inbox_dropped", "Messages dropped because the inbox stayed full", registry=r
        )
        self.broker_connected = Gauge("carewatch_broker_connected", "1 when connected", registry=r)
        self.broker_dropped = Gauge(
            "carewatch_broker_messages_dropped", "$SYS/broker/publish/messages/dropped", registry=r
        )
        self.tick_seconds = Gauge("carewatch_tick_seconds", "Duration of the last tick", registry=r)
        self.lag_seconds = Gauge(
            "carewatch_ingest_lag_seconds",
            "Pipeline clock minus receive time of the oldest message of the last batch",
            registry=r,
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.by_reason: Counter[str] = Counter()
        self.by_field: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        # perf_counter() of the last change to `totals`: a reader polling slowly (a
        # benchmark) still knows when the last sample was counted
        self.counted_at = 0.0

    def count(self, name: str, n: int = 1) -> None:
        if n:
            getattr(self, name).inc(n)
            self.totals[name] += n
            self.counted_at = time.perf_counter()

    def count_rejected(self, reason: str) -> None:
        self.rejected.labels(reason).inc()
        self.by_reason[reason] += 1

    def count_faults(self, faults: Counter[str]) -> None:
        for name, n in faults.items():
            self.faults.labels(name).inc(n)
            self.by_field[name] += n

    def snapshot(self) -> dict[str, object]:
        return {**self.totals, "rejected": dict(self.by_reason), "faults": dict(self.by_field)}
