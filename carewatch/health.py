"""Readiness and operational metrics: what `/readyz` and `/metrics` report beyond ingest.

`Health(service).ready()` returns the readiness checks (every value truthy = ready):
broker connected, pipeline thread running, alert store writable (`carewatch.store_probe`:
a real write lock on the SQLite file and free disk space, or a PostgreSQL server that takes
writes), ingest lag under a threshold, and `status` — "ok", or
"degraded: ..." naming what is being lost or shed right now (inbox shedding, history sink
losing samples, broker dropping messages, notifications failing). Degraded is still
ready: the pipeline keeps detecting and alerting; the status tells operators what it costs.

`Health(service).monitoring()` is the same seen from the monitoring centre: is anyone's
data reaching the detectors? `down` (the broker link is lost, nothing subscribed, no data at
all for `no_data_s`, the pipeline stopped, alerts cannot be stored) means residents are not
being monitored, and the console shows it on every page; `degraded` means monitoring goes
on at a cost (the `status` reasons above, or a lagging inbox).

`Health.register(registry)` adds a collector evaluated at scrape time: open alerts by
state, tier and severity, notification outcomes, history-sink losses, edge shedding,
received messages (throughput = rate of the counter) and reconnects.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carewatch.store_probe import failed_deliveries, probe_for

DEGRADED_WINDOW_S = 60.0
NO_DATA_S = 300.0  # a district's fleet is never this quiet: silence this long is a broken feed
# every console page asks every 5 s: one answer serves them all for this long (the checks
# take a write lock on the alert store and count failed deliveries)
MONITORING_CACHE_S = 2.0
# the pipeline loop turns at least once a tick (1 s); this long without a turn is a hang
STALL_S = 30.0
# the monitoring code of each `degraded()` reason
REASON_CODES = {
    "inbox shedding vitals": "inbox_shedding",
    "history sink losing samples": "history_losing",
    "broker dropping messages": "broker_dropping",
    "notifications failing": "notifications_failing",
    "inbox over 80% full": "inbox_filling",
}
SEVERITY_NAMES: dict[object, str] = {1: "low", 2: "medium", 3: "high", 4: "critical"}


class Health:
    """Readiness and scrape-time metrics of one `Service` (edge, pipeline, sink, store)."""

    def __init__(self, service: Any, lag_threshold_s: float = 30.0,
                 clock: Any = None, no_data_s: float = NO_DATA_S,
                 cache_s: float = MONITORING_CACHE_S, stall_s: float = STALL_S) -> None:
        self.service = service
        self.stall_s = stall_s
        self.lag_threshold_s = lag_threshold_s
        self.no_data_s = no_data_s
        self.cache_s = cache_s
        self.store = probe_for(service.config, service.data_dir)
        self._cached: tuple[float, dict[str, Any]] = (-math.inf, {})
        self._cache_lock = threading.Lock()
        self.clock = clock or service.clock
        self.started_at = float(self.clock.now())
        # when the received counter last moved (sampled at each look: a quiet feed is
        # judged from the last look that saw it move)
        self._received = (-1, self.started_at)
        # edge and sink counters start at 0 with the process; stored failures may predate it
        self._last: dict[str, float] = {"notifications failing": self.losses()[
            "notifications failing"]}
        self._changed_at: dict[str, float] = {}

    # -- inputs -----------------------------------------------------------------------
    def lag_s(self) -> float:
        """Age of the oldest message waiting in the inbox (0 when empty)."""
        inbox = self.service.edge.inbox
        try:
            oldest = inbox[0][2]
        except IndexError:
            return 0.0
        return max(0.0, float(self.clock.now()) - float(oldest))

    def sink_stats(self) -> dict[str, Any]:
        sink = getattr(self.service.pipeline, "sink", None)
        return dict(sink.stats()) if sink is not None and hasattr(sink, "stats") else {}

    def losses(self) -> dict[str, float]:
        """Monotonic loss counters; an increase within the window means degraded."""
        c = self.service.edge.counters
        sink = self.sink_stats()
        return {
            "inbox shedding vitals": float(c.inbox_dropped),
            "history sink losing samples": float(sink.get("dropped_overflow", 0) or 0)
            + float(sink.get("dropped_failed", 0) or 0),
            "broker dropping messages": float(c.broker_dropped),
            "notifications failing": failed_deliveries(self.store),
        }

    def degraded(self) -> list[str]:
        now = time.monotonic()
        out = []
        for name, value in self.losses().items():
            if value > self._last.get(name, 0.0):
                self._changed_at[name] = now
            self._last[name] = value
            if now - self._changed_at.get(name, -1e9) < DEGRADED_WINDOW_S:
                out.append(name)
        edge = self.service.edge
        if len(edge.inbox) >= 0.8 * edge.inbox_max:
            out.append("inbox over 80% full")
        return out

    # -- outputs ----------------------------------------------------------------------
    def ready(self) -> dict[str, object]:
        return self._ready(self.degraded())

    def _ready(self, reasons: list[str]) -> dict[str, object]:
        svc = self.service
        return {
            "broker_connected": bool(svc.edge.counters.connected),
            "pipeline_running": svc.error is None and svc._thread.is_alive(),
            "store_writable": self.store.writable(),
            "lag_below_threshold": self.lag_s() <= self.lag_threshold_s,
            "status": "degraded: " + ", ".join(reasons) if reasons else "ok",
        }

    def monitoring(self) -> dict[str, Any]:
        """Whether residents are being monitored right now: `state` "ok", "degraded" or
        "down", and `problems`, each {code, level, since (clock time or None), detail}.
        One look serves every caller for `cache_s`."""
        with self._cache_lock:
            at, answer = self._cached
            if time.monotonic() - at >= self.cache_s:
                answer = self._look()
                self._cached = (time.monotonic(), answer)
            return answer

    def _look(self) -> dict[str, Any]:
        svc = self.service
        c = svc.edge.counters
        now = float(self.clock.now())
        reasons = self.degraded()
        checks = self._ready(reasons)
        problems: list[dict[str, Any]] = []

        def add(code: str, level: str, since: float | None = None, detail: str = "") -> None:
            problems.append({"code": code, "level": level, "since": since, "detail": detail})

        if not checks["pipeline_running"]:
            add("pipeline_stopped", "down", detail=str(getattr(svc, "error", None) or ""))
        elif svc._thread.is_alive() and (
                stuck := time.monotonic() - svc.loop_at) >= self.stall_s:
            # alive but not turning (a hung call, a deadlock): no detector runs, while the
            # feed, counted on paho's thread, looks fine
            add("pipeline_stalled", "down", now - stuck, f"no turn of the loop for {stuck:.0f} s")
        received, moved_at = self._received
        if c.received != received:  # (0 only before the first message: quiet since start)
            moved_at = now if c.received else self.started_at
            self._received = (c.received, moved_at)
        if not c.connected:
            lost = c.link_lost_at
            add("broker_link_down", "down", lost if lost == lost else self.started_at,
                c.last_disconnect_reason)
        elif not c.subscribed:
            add("not_subscribed", "down", c.link_back_at)
        elif now - moved_at >= self.no_data_s and len(svc.pipeline.devices):
            add("no_data", "down", moved_at)
        if not checks["store_writable"]:
            add("store_unwritable", "down")
        if not checks["lag_below_threshold"]:
            add("ingest_lagging", "degraded", detail=f"{self.lag_s():.0f} s")
        for reason in reasons:
            add(REASON_CODES.get(reason, "degraded"), "degraded", detail=reason)
        levels = {p["level"] for p in problems}
        state = "down" if "down" in levels else "degraded" if levels else "ok"
        return {"state": state, "now": now, "problems": problems}

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(_Collector(self))


class _Collector(Collector):
    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        h = self.health
        store = h.store
        alerts = GaugeMetricFamily("carewatch_alerts_open", "Open alerts",
                                   labels=["state", "tier", "severity"])
        for state, tier, sev, n in store.rows("open_alerts"):
            alerts.add_metric([str(state), str(tier), SEVERITY_NAMES.get(sev, str(sev))], float(n))
        yield alerts
        outbox = GaugeMetricFamily("carewatch_notifications", "Notifications by status",
                                   labels=["status"])
        for status, n in store.rows("outbox_by_status"):
            outbox.add_metric([str(status)], float(n))
        yield outbox
        attempts = CounterMetricFamily("carewatch_notification_attempts",
                                       "Delivery attempts by outcome", labels=["outcome"])
        for outcome, n in store.rows("attempts_by_outcome"):
            attempts.add_metric([str(outcome)], float(n))
        yield attempts
        c = h.service.edge.counters
        for name, doc, value in [
            ("carewatch_mqtt_received", "Messages received from the broker", c.received),
            ("carewatch_inbox_shed", "Vitals dropped by the shedding policy", c.inbox_dropped),
            ("carewatch_inbox_priority_kept", "Fall/status/command messages kept past the "
             "inbox bound", c.inbox_priority_kept),
            ("carewatch_broker_connects", "Connections made to the broker", c.connects),
        ]:
            yield CounterMetricFamily(name, doc, value=float(value))
        sink = h.sink_stats()
        lost = CounterMetricFamily("carewatch_history_samples_lost",
                                   "Samples the history sink could not store", labels=["why"])
        for key in ("dropped_overflow", "dropped_failed"):
            lost.add_metric([key], float(sink.get(key, 0) or 0))
        yield lost
        yield GaugeMetricFamily("carewatch_inbox_lag_seconds",
                                "Age of the oldest message waiting in the inbox",
                                value=h.lag_s())
