"""A restarted pipeline (after a crash or a stop) resumes the conditions behind its open
alerts, not only the alerts: the detectors start with no memory, and a device_offline alert
left "condition active" by the previous run inhibited the resident's physiological alerts
for good once the device was back (a critical hypoxemia opened nothing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, small_config, wait_for


def _events(watcher: Client) -> list[dict[str, Any]]:
    return [body for _topic, body in watcher.received() if isinstance(body, dict)]


def _has(watcher: Client, resident: str, kind: str, event: str) -> bool:
    return any(e["resident_id"] == resident and e["kind"] == kind and e.get("event") == event
               for e in _events(watcher))


def test_a_device_back_during_a_restart_clears_its_offline_alert(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    offline_s = 4.0
    config = small_config(residents=2, towns=1, thresholds={
        "device_offline": {"offline_s": offline_s},
        "hypoxemia": {"duration_s": 2.0, "critical_duration_s": 1.0}})
    back, dark = config.residents
    broker = BrokerSettings(url=mosquitto.url, client_id="cw-resume")
    watcher = Client(mosquitto.port, "ops", subscribe=("carewatch/v1/+/alerts/+",))
    fleet = Client(mosquitto.port, "fleet")
    seq = iter(range(1, 10_000))

    def vitals(r: Any, ts: float, spo2: float = 97.0) -> None:
        fleet.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                      {"ts": ts, "seq": next(seq), "spo2": spo2, "hr": 75, "worn": True,
                       "activity": 0.0}).wait_for_publish(5)

    first = Service(config, broker=broker, data_dir=tmp_path)
    second: Service | None = None
    try:
        first.start()
        wait_for(lambda: first.edge.counters.subscribed, 10, "the first run subscribed")
        for r in (back, dark):
            vitals(r, time.time())
        wait_for(lambda: all(_has(watcher, r.id, "device_offline", "opened")
                             for r in (back, dark)), 30, "both devices found offline")
        first.stop()
        vitals(back, time.time())  # the device returns while the pipeline is away

        second = Service(config, broker=broker, data_dir=tmp_path)
        second.start()
        wait_for(lambda: _has(watcher, back.id, "device_offline", "condition_cleared"), 15,
                 "the returned device's offline condition cleared after the restart")
        held = {a.resident_id: a for a in second.pipeline.alerts.open_alerts()  # type: ignore[union-attr]
                if a.kind == "device_offline"}
        assert held[back.id].condition_active is False

        # its physiological alerts are no longer inhibited by the stale offline alert
        now = time.time()
        for k in range(4):
            vitals(back, now - 3 + k, spo2=84.0)
        wait_for(lambda: _has(watcher, back.id, "hypoxemia", "opened"), 15,
                 "a critical hypoxemia of the returned device opened")

        # the device still dark is still offline: no clear at the restart, and no second
        # onset once the restarted run has been up for offline_s
        started = second.pipeline.started_at
        wait_for(lambda: second is not None and second.clock.now() > started + offline_s + 2
                 and second.pipeline.ticks > 5, 30, "the restarted run past offline_s")
        ticks = second.pipeline.ticks
        wait_for(lambda: second is not None and second.pipeline.ticks >= ticks + 2, 10,
                 "two more ticks")
        dark_events = [e["event"] for e in _events(watcher)
                       if e["resident_id"] == dark.id and e["kind"] == "device_offline"]
        assert dark_events == ["opened"], dark_events
        assert held[dark.id].condition_active is True
        opened = [(e["resident_id"], e["kind"]) for e in _events(watcher)
                  if e.get("event") == "opened"]
        assert sorted(opened) == sorted([(back.id, "device_offline"), (dark.id, "device_offline"),
                                         (back.id, "hypoxemia")]), opened
    finally:
        first.stop()
        if second is not None:
            second.stop()
        watcher.close()
        fleet.close()
