"""A simulated fleet published through a real Mosquitto arrives complete at a subscriber."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.clock import WallClock
from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings
from simulators.fleet import LiveFleet
from simulators.scenario import Scenario
from tests.ingest_harness import ingest_service, small_config, wait_for


class Collector:
    """A paho subscriber on carewatch/v1/#, collecting payloads per topic."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-test-sub",
                        protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *_a: cl.subscribe("carewatch/v1/#", qos=1)
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        c.connect(host, port)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _vitals_samples(messages: list[tuple[str, bytes, bool]]) -> int:
    n = 0
    for topic, payload, _r in messages:
        if topic.endswith("/vitals"):
            p = orjson.loads(payload)
            n += len(p["samples"]) if "samples" in p else 1
    return n


def test_fleet_arrives_complete_with_last_will(mosquitto: Any) -> None:
    config = parse_config(demo_registry(40, seed=2))
    scenario = Scenario.from_dict({"events": [
        {"resident": "r-0003", "kind": "device_offline", "at": "+5m", "duration": "20m"},
        {"resident": "r-0004", "kind": "fall", "at": "+2m"},
    ]})
    broker = BrokerSettings(url=mosquitto.url)
    sub = Collector(mosquitto.host, mosquitto.port)
    fleet = LiveFleet(config, broker, speed=1200.0, interval_s=10.0, batch=3, qos=1,
                      scenario=scenario, seed=2, start=time.time() - 3600, hours=0.5,
                      connections=2, lwt_devices=2)
    try:
        fleet.start()
        assert fleet.wait(60), "the run finishes"
        assert not fleet.errors
        expected = fleet.samples
        assert expected > 40 * 150
        assert sub.wait_for(lambda m: _vitals_samples(m) >= expected, 30)
    finally:
        fleet.stop()
    msgs = list(sub.messages)
    sub.close()
    assert _vitals_samples(msgs) == expected, "no sample lost or duplicated"
    vitals = [(t, orjson.loads(p)) for t, p, _ in msgs if t.endswith("/vitals")]
    assert len(vitals) == fleet.published
    devices = {t.split("/")[3] for t, _ in vitals}
    assert devices == {r.device for r in config.residents}
    status = [(t, orjson.loads(p)) for t, p, _ in msgs if t.endswith("/status")]
    online = {t.split("/")[3] for t, p in status if p.get("online") is True}
    assert online == devices, "every device announces itself"
    dark = [t for t, p in status if p == {"online": False}]
    assert dark == ["carewatch/v1/" + config.residents[2].town + "/dev-0003/status"], \
        "the broker's Last Will marks the vanished device offline"
    off = next(e for e in fleet.sim.events.events if e.kind == "device_offline")
    during = [p for t, p in vitals if "/dev-0003/" in t
              for s in p["samples"] if off.start + 5 < s["ts"] < off.end - 5]
    assert not during


def test_stopping_the_fleet_disconnects_cleanly_so_no_last_will_fires(mosquitto: Any) -> None:
    """A stopped simulator is not a fleet of dead devices: its own-connection devices say
    DISCONNECT, so the broker publishes none of their wills (a will is for vanishing)."""
    config = parse_config(demo_registry(12, seed=3))
    sub = Collector(mosquitto.host, mosquitto.port)
    fleet = LiveFleet(config, BrokerSettings(url=mosquitto.url), speed=1.0, interval_s=5.0,
                      seed=3, connections=1, lwt_devices=8)
    try:
        fleet.start()
        assert sub.wait_for(lambda m: sum(t.endswith("/status") for t, _p, _r in m) >= 12)
    finally:
        fleet.stop()
    # a marker published after the stop: once it arrives, any will the stop caused (the
    # broker handles a socket's end before a later connection's publish) has arrived too
    marker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-test-marker",
                         protocol=mqtt.MQTTv311)
    marker.connect(mosquitto.host, mosquitto.port)
    marker.loop_start()
    try:
        marker.publish("carewatch/v1/test/marker/vitals", b"{}", qos=1).wait_for_publish(10)
        assert sub.wait_for(lambda m: any(t.endswith("/marker/vitals") for t, _p, _r in m))
    finally:
        marker.disconnect()
        marker.loop_stop()
        sub.close()
    wills = [t for t, p, _r in sub.messages if t.endswith("/status")
             and orjson.loads(p).get("online") is False]
    assert wills == []



def _last_status(messages: list[tuple[str, bytes, bool]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for topic, payload, _r in messages:
        if topic.endswith("/status"):
            out[topic] = orjson.loads(payload)
    return out


def test_devices_say_online_again_after_a_broker_restart(mosquitto: Any) -> None:
    """A broker shutting down publishes the Last Will of every device connected to it, and
    keeps it retained across the restart; a device with a will of its own (as firmware
    does) says `{"online": true}` again, retained, when it reconnects, so a subscriber
    arriving after the restart does not find the fleet offline."""
    config = parse_config(demo_registry(6, seed=4))
    fleet = LiveFleet(config, BrokerSettings(url=mosquitto.url), speed=1.0, interval_s=5.0,
                      seed=4, connections=1, lwt_devices=3)
    own = {fleet.status_topics[r] for r in fleet.lwt_rows}
    assert len(own) == 3
    sub: Collector | None = None
    try:
        fleet.start()
        mosquitto.stop()  # graceful: the broker publishes the three wills, retained
        mosquitto.start()
        sub = Collector(mosquitto.host, mosquitto.port)  # as a pipeline starting now would
        assert sub.wait_for(lambda m: len(s := _last_status(m)) == 6 and all(
            p.get("online") is True for p in s.values()), 20), _last_status(sub.messages)
        assert not fleet.errors
    finally:
        fleet.stop()
        if sub is not None:
            sub.close()


def test_an_accelerated_run_of_no_fixed_length_never_publishes_into_the_future(
    mosquitto: Any, tmp_path: Any
) -> None:
    """`carewatch simulate --speed S` (or `demo --speed S`) without `--hours`: the fleet's
    clock may lead the real one by half the pipeline's future tolerance, then runs in real
    time, so the pipeline rejects nothing as future_ts. It used to run ahead without bound:
    at speed 10 every sample after the first 33 s was rejected."""
    tolerance = 20.0
    config = small_config(4, 2, pipeline={"future_tolerance_s": tolerance})
    service = ingest_service(config, mosquitto.url, tmp=tmp_path)
    service.start()
    fleet = LiveFleet(config, BrokerSettings(url=mosquitto.url), speed=100.0, interval_s=1.0,
                      seed=3)
    try:
        assert service.edge.wait_connected(10)
        fleet.start()
        # uncapped, the fleet's clock is now 5 tolerances ahead of the real one
        wait_for(lambda: time.monotonic() - (fleet._t_wall0 or 0.0) > 5 * tolerance / 100.0,
                 what="the fleet to run 5 tolerances of simulated time")
        assert fleet.sim_now() <= WallClock().now() + tolerance / 2 + 0.01
        fleet.stop()
        assert not fleet.errors
        published = fleet.published + len(config.residents)  # + each device's online status
        m = service.pipeline.metrics
        wait_for(lambda: m.totals["received"] >= published, what="every message handled")
        assert m.by_reason.get("future_ts", 0) == 0 and m.totals["future"] == 0, m.snapshot()
        assert m.totals["samples"] == fleet.samples > 0
    finally:
        fleet.stop()
        service.stop()
