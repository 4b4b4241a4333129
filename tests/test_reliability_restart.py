"""A restarted pipeline (after a crash or a stop) resumes the conditions behind its open
alerts, not only the alerts: the detectors start with no memory, and a device_offline alert
left "condition active" by the previous run inhibited the resident's physiological alerts
for good once the device was back (a critical hypoxemia opened nothing); any other alert
stayed "condition active" until someone resolved it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess, free_port
from tests.ingest_harness import Client, small_config, wait_for
from tests.process_harness import stop_process


def _events(watcher: Client) -> list[dict[str, Any]]:
    return [body for _topic, body in watcher.received() if isinstance(body, dict)]


def _has(watcher: Client, resident: str, kind: str, event: str) -> bool:
    return any(e["resident_id"] == resident and e["kind"] == kind and e.get("event") == event
               for e in _events(watcher))


def _vitals_sender(fleet: Client) -> Callable[..., None]:
    """`send(resident, ts, spo2=97.0)`: one vitals sample at rest, its own seq, confirmed."""
    seq = iter(range(1, 10_000))

    def send(r: Any, ts: float, spo2: float = 97.0) -> None:
        fleet.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                      {"ts": ts, "seq": next(seq), "spo2": spo2, "hr": 75, "worn": True,
                       "activity": 0.0}).wait_for_publish(5)

    return send


def _shut(first: Service, second: Service | None, *clients: Client) -> None:
    """Stop both runs (a second stop() does nothing) and close the MQTT clients."""
    first.stop()
    if second is not None:
        second.stop()
    for c in clients:
        c.close()


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
    vitals = _vitals_sender(fleet)

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
        _shut(first, second, watcher, fleet)


def test_a_condition_that_ends_during_a_restart_clears_its_alert(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    """Every detector resumes its open alerts' conditions, not only device_offline: a
    hypoxemia whose resident recovered while the pipeline was away is cleared after the
    restart instead of staying "condition active" until someone resolves it."""
    config = small_config(residents=1, towns=1, thresholds={
        "hypoxemia": {"duration_s": 2.0, "critical_duration_s": 1.0, "clear_s": 2.0}})
    (r,) = config.residents
    broker = BrokerSettings(url=mosquitto.url, client_id="cw-resume-physio")
    watcher = Client(mosquitto.port, "ops-physio", subscribe=("carewatch/v1/+/alerts/+",))
    fleet = Client(mosquitto.port, "fleet-physio")
    vitals = _vitals_sender(fleet)

    first = Service(config, broker=broker, data_dir=tmp_path)
    second: Service | None = None
    try:
        first.start()
        wait_for(lambda: first.edge.counters.subscribed, 10, "the first run subscribed")
        now = time.time()
        for k in range(4):
            vitals(r, now - 3 + k, 84.0)
        wait_for(lambda: _has(watcher, r.id, "hypoxemia", "opened"), 15, "hypoxemia opened")
        first.stop()

        second = Service(config, broker=broker, data_dir=tmp_path)
        second.start()
        wait_for(lambda: second is not None and second.edge.counters.subscribed, 10,
                 "the second run subscribed")
        now = time.time()
        for k in range(4):
            vitals(r, now - 3 + k, 97.0)
        wait_for(lambda: _has(watcher, r.id, "hypoxemia", "condition_cleared"), 15,
                 "the recovered resident's hypoxemia cleared after the restart")
        (held,) = [a for a in second.pipeline.alerts.open_alerts()  # type: ignore[union-attr]
                   if a.kind == "hypoxemia"]
        assert held.condition_active is False
        assert held.severity == 4  # critical, as opened: the clear does not lower it
        opened = [e["kind"] for e in _events(watcher) if e.get("event") == "opened"]
        assert opened == ["hypoxemia"], opened
    finally:
        _shut(first, second, watcher, fleet)


def _persistent_watcher(port: int, topic: str) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    """A subscriber whose session the broker keeps (and queues for) across outages."""
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ops-persistent",
                    protocol=mqtt.MQTTv311, clean_session=False)
    c.reconnect_delay_set(min_delay=1, max_delay=1)
    c.on_message = lambda _c, _u, msg: got.append(orjson.loads(msg.payload))
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert subscribed.wait(10), "watcher not subscribed"
    return c, got


def _stored_events(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            rows = con.execute("SELECT doc FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # not created yet, or locked for a moment
            return []
    return [(d["event"], d["tier"]) for d in (orjson.loads(r[0]) for r in rows)]


def test_an_event_made_while_the_broker_is_down_survives_a_crash_before_it_returns(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    """The broker is down, an alert escalates (the event waits in paho's memory), the
    pipeline is SIGKILLed, the broker comes back, the pipeline restarts: the escalation
    must still reach subscribers. It was marked published when handed to paho, so the
    restart never sent it again: staff saw tier 1, then tier 3."""
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        "timezone: Asia/Shanghai\n"
        "towns: [{id: gufu, name: gufu}]\n"
        "residents: [{id: r-0001, town: gufu, device: dev-0001}]\n"
        "ack_timeout_s: {critical: 3, high: 600, medium: 600, low: 600}\n")
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "run",
            "--config", str(reg), "--broker", mosquitto.url,
            "--http", f"127.0.0.1:{free_port()}", "--data-dir", str(data)]
    watcher, got = _persistent_watcher(mosquitto.port, "carewatch/v1/gufu/alerts/+")
    fleet = Client(mosquitto.port, "fleet")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _ready(proc, "pipeline running"), 60, "the pipeline started")
        fleet.publish("carewatch/v1/gufu/dev-0001/vitals",
                      {"ts": time.time(), "seq": 1, "fall": True, "worn": True}
                      ).wait_for_publish(5)
        wait_for(lambda: any(e["event"] == "opened" for e in got), 15, "the fall alert opened")
        fleet.close()
        mosquitto.stop()
        db = data / "alerts.db"
        wait_for(lambda: ("escalated", 2) in _stored_events(db), 15,
                 "the escalation to tier 2 stored while the broker is down")
        proc.kill()  # SIGKILL: whatever paho held in memory is gone
        proc.wait()
        stop_process(proc)
        mosquitto.start()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        wait_for(lambda: sum(e["event"] == "escalated" for e in got) >= 3, 30,
                 "tiers 2, 3 and 4 delivered")
        # QoS 1 may repeat a message (the broker went down before the watcher's PUBACK):
        # a repeat is the same document; a second alert would not be
        distinct = list({orjson.dumps(e): e for e in got}.values())
        seen = [(e["event"], e["tier"]) for e in distinct]
        assert ("escalated", 2) in seen, seen
        assert [e for e in seen if e[0] == "opened"] == [("opened", 1)], seen
        assert seen.index(("escalated", 2)) < seen.index(("escalated", 3)), seen
        assert len({e["alert_id"] for e in distinct}) == 1
    finally:
        stop_process(proc)
        watcher.disconnect()
        watcher.loop_stop()


def _ready(proc: subprocess.Popen[str], marker: str) -> bool:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        line = proc.stdout.readline()
    except (OSError, TypeError):
        return False
    assert proc.poll() is None, "the pipeline exited"
    return marker in (line or "")


def _unpublished(db: Path) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            return int(con.execute("SELECT count(*) FROM events WHERE published = 0")
                       .fetchone()[0])
        except sqlite3.OperationalError:  # locked for a moment
            return None


def test_an_event_queued_while_the_broker_is_down_is_marked_published_once_delivered(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    """The other half of publish-on-PUBACK: an event paho queued while the link was down,
    and sent once it is back, counts as published then (else every restart would send it
    again, and the store would never settle)."""
    config = small_config(residents=1, towns=1, ack_timeout_s={
        "critical": 3, "high": 600, "medium": 600, "low": 600})
    r = config.residents[0]
    watcher, got = _persistent_watcher(mosquitto.port, f"carewatch/v1/{r.town}/alerts/+")
    fleet = Client(mosquitto.port, "fleet")
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-puback"),
                      data_dir=tmp_path)
    db = tmp_path / "alerts.db"
    try:
        service.start()
        wait_for(lambda: service.edge.counters.subscribed, 10, "the pipeline subscribed")
        fleet.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                      {"ts": time.time(), "seq": 1, "fall": True, "worn": True}
                      ).wait_for_publish(5)
        wait_for(lambda: any(e["event"] == "opened" for e in got), 15, "the fall alert opened")
        wait_for(lambda: _unpublished(db) == 0, 10, "the opened event confirmed")
        fleet.close()
        mosquitto.stop()
        wait_for(lambda: ("escalated", 2) in _stored_events(db), 15,
                 "the escalation to tier 2 stored while the broker is down")
        wait_for(lambda: (_unpublished(db) or 0) >= 1, 5,
                 "the escalation held unpublished (not delivered yet)")
        mosquitto.start()
        wait_for(lambda: any(e["event"] == "escalated" and e["tier"] == 2 for e in got), 30,
                 "tier 2 delivered once the broker is back")
        wait_for(lambda: _unpublished(db) == 0, 15,
                 "every delivered event marked published")
    finally:
        service.stop()
        watcher.disconnect()
        watcher.loop_stop()
