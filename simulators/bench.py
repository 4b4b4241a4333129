"""Simulator benchmarks, wired into `carewatch bench`."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings
from simulators.engine import Simulation
from simulators.record import write_recording

START = 1764316800.0


def bench_generate(residents: int = 200, hours: float = 24, interval_s: float = 10,
                   path: str | None = None) -> dict[str, Any]:
    """Generate and encode a recording (to `path`, default nowhere): samples/s.

    Target: >= 1,000,000 samples/s (200 residents x 24 h at 10 s in <= 2 s)."""
    config = parse_config(demo_registry(residents, seed=0))
    sim = Simulation(config, 0, START, interval_s, hours, random_rate=1.0)
    stats = write_recording(sim, path)
    return {"residents": residents, "hours": hours, "samples": stats["samples"],
            "seconds": round(stats["seconds"], 3), "cpu_seconds": round(stats["cpu_seconds"], 3),
            "samples_per_s": round(stats["samples_per_s"])}


def bench_publish(broker_url: str, seconds: float = 10, residents: int = 2000,
                  batch: int = 10, qos: int = 0) -> dict[str, Any]:
    """Sustained samples/s through the broker (target >= 20,000), counted at a subscriber."""
    from simulators.fleet import LiveFleet

    config = parse_config(demo_registry(residents, seed=0))
    host, port = broker_url.split("://", 1)[1].rstrip("/").split(":")
    received = [0]
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="carewatch-bench-sub",
                      protocol=mqtt.MQTTv311)
    sub.on_connect = lambda c, *_a: c.subscribe("carewatch/v1/+/+/vitals", qos=qos)
    sub.on_subscribe = lambda *_a: ready.set()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received[0] += msg.payload.count(b'"ts"')

    sub.on_message = on_message
    sub.connect(host, int(port))
    sub.loop_start()
    ready.wait(10)
    # 2,000 devices at 1 s sampling is 2,000 samples/s of simulated time; speed multiplies it
    speed = 50.0
    hours = seconds * speed / 3600
    fleet = LiveFleet(config, BrokerSettings(url=broker_url), speed=speed, interval_s=1.0,
                      batch=batch, qos=qos, seed=0, start=time.time() - hours * 3600,
                      hours=hours, connections=2)
    try:
        t0 = time.monotonic()
        fleet.start()
        fleet.wait(seconds * 4 + 30)
        published = fleet.samples
        deadline = time.monotonic() + 10
        while received[0] < published and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        fleet.stop()
        sub.disconnect()
        sub.loop_stop()
    return {"published_samples": published, "received_samples": received[0],
            "seconds": round(took, 2), "samples_per_s": round(received[0] / max(took, 1e-9)),
            "batch": batch, "qos": qos, "errors": fleet.errors}
