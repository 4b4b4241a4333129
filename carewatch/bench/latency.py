"""Latency benchmark: publish → alert event received, under background load.

A full `carewatch run` service (every detector, the alert engine, the SQLite sink) runs
against a local Mosquitto. Background publishers in separate processes send ordinary vitals
for many residents at a paced rate. Probe devices then publish (a) a device fall, timed from
the publish of the fall sample, and (b) SpO2 83 % at rest once a second, timed from the
publish of the sample that completes the contract's 30 s critical-hypoxemia duration. A
subscriber on the alert topics stamps each `open` event's arrival.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.service import Service
from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings, Config
from ingest.broker import MosquittoProcess

LOAD_PROCESSES = 2


def _load_worker(port: int, topics: list[str], rate: float, seconds: float, wid: int) -> None:
    """Publish ordinary vitals round-robin over `topics` at `rate` msgs/s (QoS 1)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-load-{wid}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    sent = 0
    seq = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) + 1
        while sent < due:
            topic = topics[sent % len(topics)]
            seq += 1
            body = {
                "ts": time.time(),
                "seq": seq,
                "hr": 72,
                "spo2": 97,
                "rr": 15,
                "activity": 0.3,
                "worn": True,
            }
            client.publish(topic, orjson.dumps(body), qos=1)
            sent += 1
        time.sleep(0.002)  # pacing: the rate is set by `due`, the sleep only yields the CPU
    client.disconnect()
    client.loop_stop()


class _AlertWatch:
    def __init__(self, port: int) -> None:
        self.opened: dict[tuple[str, str], float] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-alert-watch",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("carewatch/v1/+/alerts/#", qos=1)
        self._ready.wait(10)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        event = orjson.loads(msg.payload)
        if event.get("state") == "open":
            self.opened.setdefault((event["resident_id"], event["kind"]), now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _probe_run(
    config: Config, broker: MosquittoProcess, rate: float, falls: int, sustained: int, tmp: Path
) -> dict[str, float]:
    residents = config.residents
    fall_probes = residents[:falls]
    # SpO2 83 % at rest is critical after 30 s on scale 1 only: a copd resident (scale 2,
    # critical at <= 80 %) would not alert within the probe, and would only be waited for
    sus = [r for r in residents[falls:] if "copd" not in r.conditions][:sustained]
    probing = {r.id for r in (*fall_probes, *sus)}
    load_topics = [
        f"carewatch/v1/{r.town}/{r.device}/vitals" for r in residents if r.id not in probing
    ]
    service = Service(
        config, broker=BrokerSettings(url=broker.url, client_id="bench-latency"), data_dir=tmp
    )
    service.start()
    watch = _AlertWatch(broker.port)
    pub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-probe",
        protocol=mqtt.MQTTv5,
    )
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    ctx = mp.get_context("spawn")
    probe_gap_s = 0.37  # not a divisor of the tick: probes land at every phase of it
    seconds = 3.0 + max(falls, sustained) * probe_gap_s + 5.0
    loaders = (
        [
            ctx.Process(
                target=_load_worker,
                args=(
                    broker.port,
                    load_topics[i::LOAD_PROCESSES],
                    rate / LOAD_PROCESSES,
                    seconds,
                    i,
                ),
            )
            for i in range(LOAD_PROCESSES)
        ]
        if rate > 0
        else []
    )
    try:
        if not service.edge.wait_connected(10) or not _wait(
            lambda: service.edge.counters.subscribed, 10
        ):
            raise RuntimeError("service could not connect and subscribe")
        for p in loaders:
            p.start()
        time.sleep(3.0)  # let the background load reach its pace before probing
        fall_sent: dict[str, float] = {}
        completing_sent: dict[str, float] = {}
        for k in range(max(falls, len(sus))):
            if k < falls:
                r = fall_probes[k]
                topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
                fall_sent[r.id] = time.time()
                body = {"ts": fall_sent[r.id], "fall": True, "worn": True}
                pub.publish(topic, orjson.dumps(body), qos=1)
            if k < len(sus):
                # 30 s of SpO2 83 % at rest (device time), sent at once; the last sample
                # completes the critical rule's duration: time from its publish
                r = sus[k]
                topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
                now = time.time()
                history = [
                    {
                        "ts": round(now - 30 + j, 3),
                        "spo2": 83,
                        "hr": 80,
                        "activity": 0.01,
                        "worn": True,
                    }
                    for j in range(30)
                ]
                pub.publish(topic, orjson.dumps({"samples": history}), qos=1)
                completing_sent[r.id] = time.time()
                last = {
                    "ts": round(time.time(), 3),
                    "spo2": 83,
                    "hr": 80,
                    "activity": 0.01,
                    "worn": True,
                }
                pub.publish(topic, orjson.dumps(last), qos=1)
            time.sleep(probe_gap_s)  # probes spread over the run, not all in one tick
        _wait(
            lambda: (
                all((r.id, "hypoxemia") in watch.opened for r in sus)
                and all((r.id, "fall") in watch.opened for r in fall_probes)
            ),
            15,
        )
        fall_lat = [
            (watch.opened[(rid, "fall")] - t) * 1000
            for rid, t in fall_sent.items()
            if (rid, "fall") in watch.opened
        ]
        sus_lat = [
            (watch.opened[(rid, "hypoxemia")] - t) * 1000
            for rid, t in completing_sent.items()
            if (rid, "hypoxemia") in watch.opened
        ]
    finally:
        for p in loaders:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
        pub.disconnect()
        pub.loop_stop()
        watch.close()
        processed = service.pipeline.metrics.totals["received"]
        service.stop()
    f50, f99 = _percentiles(fall_lat)
    s50, s99 = _percentiles(sus_lat)
    return {
        "fall_p50_ms": f50,
        "fall_p99_ms": f99,
        "fall_n": float(len(fall_lat)),
        "sustained_p50_ms": s50,
        "sustained_p99_ms": s99,
        "sustained_n": float(len(sus_lat)),
        "messages_processed": float(processed),
    }


def bench_latency(
    rates: tuple[float, ...] = (1_000.0, 10_000.0),
    falls: int = 30,
    sustained: int = 20,
    residents: int = 2_000,
) -> dict[str, float]:
    """p50/p99 publish → alert event for falls and sustained rules at each background rate."""
    config = parse_config(demo_registry(residents, seed=0))
    config = config.model_copy(
        update={"storage": config.storage.model_copy(update={"sink": "none"})}
    )
    out: dict[str, float] = {}
    for rate in rates:
        with (
            tempfile.TemporaryDirectory(prefix="carewatch-bench-lat-") as d,
            MosquittoProcess(persistence=False) as broker,
        ):
            figures = _probe_run(config, broker, rate, falls, sustained, Path(d))
        label = f"{int(rate / 1000)}k"
        for key, value in figures.items():
            out[f"{key}_{label}"] = value
    last = f"{int(rates[-1] / 1000)}k"
    out["fall_p99_ms"] = out[f"fall_p99_ms_{last}"]
    out["sustained_p99_ms"] = out[f"sustained_p99_ms_{last}"]
    return out
