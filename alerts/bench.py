"""Alert-path benchmark: finding in → contract event out (MQTT publisher and listener).

`bench_alerts(open_alerts=1000)` opens that many alerts, then times new findings arriving on
ticks where every open alert also repeats its finding (the realistic worst case: detectors
re-emit active conditions each tick), and escalation ticks over all of them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from alerts.testing import T0, minimal_config
from carewatch.clock import SimClock
from detectors.base import Findings
from ingest.devices import DeviceTable


class _TimedPublisher:
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.stamps.append(time.perf_counter())


def _findings(kind: str, rows: np.ndarray, severity: int) -> Findings:
    n = len(rows)
    return Findings(kind, rows.astype(np.int32), np.full(n, severity, np.int8),
                    np.ones(n, bool), np.full(n, T0, np.float64),
                    {"spo2_min": np.full(n, 84.0)})


def bench_alerts(open_alerts: int = 1000, samples: int = 200) -> dict[str, float]:
    """Latency figures in milliseconds (p50/p99 finding→notification, tick with all open)."""
    from alerts.engine import AlertEngine

    residents = open_alerts + samples
    config = minimal_config(residents)
    devices = DeviceTable.from_config(config)
    clock = SimClock(T0)
    publisher = _TimedPublisher()
    heard: list[float] = []
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-") as tmp:
        engine = AlertEngine(config, devices, clock, publisher, Path(tmp),
                             deterministic_ids=True)
        engine.add_listener(lambda _e: heard.append(time.perf_counter()))
        try:
            background = np.arange(open_alerts)
            engine.on_findings([_findings("hypoxemia", background, 3)], T0)
            latencies, ticks = [], []
            for i in range(samples):
                now = T0 + 1.0 + i
                clock.set(now)
                new = np.array([open_alerts + i])
                batch: list[Any] = [_findings("hypoxemia", background, 3),
                                    _findings("fall", new, 4)]
                before = len(heard)
                t0 = time.perf_counter()
                engine.on_findings(batch, now)
                assert len(heard) == before + 1
                latencies.append(heard[-1] - t0)
                t1 = time.perf_counter()
                engine.tick(now)
                ticks.append(time.perf_counter() - t1)
            # One tick where every background alert escalates at once (tier 1 → 2).
            t2 = time.perf_counter()
            engine.tick(T0 + 301.0)
            escalate_all = time.perf_counter() - t2
        finally:
            engine.close()
    lat = np.array(latencies) * 1000.0
    tk = np.array(ticks) * 1000.0
    return {
        "open_alerts": float(open_alerts),
        "finding_to_notification_p50_ms": float(np.percentile(lat, 50)),
        "finding_to_notification_p99_ms": float(np.percentile(lat, 99)),
        "tick_p99_ms": float(np.percentile(tk, 99)),
        f"escalate_{open_alerts}_ms": escalate_all * 1000.0,
    }


if __name__ == "__main__":
    for key, value in bench_alerts().items():
        print(f"{key}: {value:.2f}")
