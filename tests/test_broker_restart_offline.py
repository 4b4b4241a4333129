"""A broker restart is not an outage of every device. Mosquitto shutting down publishes the
Last Will of each device connected to it (and the pipeline's persistent session replays
them after): without care the pipeline opened a "device offline" alert for every device at
each broker restart or upgrade. Wills published around the pipeline's own outage wait
`outage_grace_s` for their device to come back; a device that stays away is still found."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.clock import WallClock
from carewatch.service import MAX_TICK_DELAY_S, WILL_SETTLE_S, Service, tick_delay
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.ingest_harness import small_config, wait_for


class Device:
    """A wearable: a will on its status topic; on every connection it says online and
    sends a sample."""

    def __init__(self, port: int, town: str, device: str) -> None:
        self.status = f"carewatch/v1/{town}/{device}/status"
        self.vitals = f"carewatch/v1/{town}/{device}/vitals"
        self.connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device}",
                        protocol=mqtt.MQTTv311)
        c.will_set(self.status, b'{"online": false}', qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *_a: self.connected.clear()
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_connect(self, c: mqtt.Client, *_a: Any) -> None:
        c.publish(self.status, b'{"online": true}', qos=1, retain=True)
        c.publish(self.vitals, orjson.dumps({"ts": WallClock().now(), "hr": 70, "worn": True}),
                  qos=1)
        self.connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_restart_opens_no_offline_alert_for_devices_that_return(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    config = small_config(residents=4, thresholds={"device_offline": {"outage_grace_s": 4}})
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-restart"),
                      data_dir=tmp_path)
    events: list[dict[str, Any]] = []
    service.pipeline.alerts.add_listener(events.append)  # type: ignore[union-attr]
    service.start()
    devices: list[Device] = []
    gone: Device | None = None
    try:
        assert service.edge.wait_connected(10)
        wait_for(lambda: service.edge.counters.subscribed, 10, "the pipeline subscribed")
        devices = [Device(mosquitto.port, r.town, r.device) for r in config.residents]
        store = service.pipeline.store
        wait_for(lambda: bool((store.samples_total > 0).all() and (store.online == 1).all()),
                 15, "every device online and heard")
        gone = devices.pop()  # this one will not come back after the restart
        gone.client.loop_stop()  # (its socket stays open until the broker goes)
        mosquitto.stop()  # a graceful restart: the broker publishes every device's will
        mosquitto.start()
        wait_for(lambda: service.edge.counters.connects >= 2, 30, "the pipeline reconnected")
        wait_for(lambda: all(d.connected.is_set() for d in devices), 30, "devices reconnected")
        stayed_away = config.residents[-1].id
        wait_for(lambda: any(e["event"] == "opened" and e["resident_id"] == stayed_away
                             and e["kind"] == "device_offline" for e in events),
                 30, "the device that stayed away found offline")
        offline = sorted(e["resident_id"] for e in events
                         if e["kind"] == "device_offline" and e["event"] == "opened")
        assert offline == [stayed_away], offline
        opened = next(e for e in events if e["event"] == "opened")
        assert opened["evidence"]["last_will"] is True
    finally:
        for d in devices:
            d.close()
        if gone is not None:
            sock = gone.client.socket()
            if sock is not None:
                sock.close()
        service.stop()


def test_a_due_tick_waits_briefly_after_offline_statuses() -> None:
    """The live driver holds a due tick until WILL_SETTLE_S after the last offline status (a
    broker going down sends wills for a while before our own link drops), never more than
    MAX_TICK_DELAY_S past its time."""
    due = 100.0
    assert tick_delay(100.0, due, -float("inf")) == 0.0  # no offline status: on time
    assert tick_delay(100.0, due, 99.0) == 0.0  # an old one
    assert tick_delay(100.0, due, 99.9) == pytest.approx(WILL_SETTLE_S - 0.1)
    # a steady stream of offline statuses cannot hold it past the cap
    assert tick_delay(100.0 + MAX_TICK_DELAY_S - 0.1, due, 100.0 + MAX_TICK_DELAY_S - 0.1) \
        == pytest.approx(0.1)
    assert tick_delay(100.0 + MAX_TICK_DELAY_S, due, 100.0 + MAX_TICK_DELAY_S) == 0.0
