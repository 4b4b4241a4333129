"""A device-reported fall is judged on arrival: between ticks (`Pipeline.fall_lane`) and,
live, in the middle of a tick already running, without judging any sample twice."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

import detectors.registry as registry
from carewatch.app import build_pipeline
from carewatch.clock import SimClock, WallClock
from carewatch.service import FULL_COLLECTION_EVERY, Service
from config.models import BrokerSettings, Config
from detectors.base import Findings, TickState
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, wait_for
from tests.test_console_server import service_config

T0 = 1_764_316_800.0


class _Discard:
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        return None


def _vitals(config: Config, i: int, body: dict[str, Any], t: float) -> tuple[str, bytes, float]:
    r = config.residents[i]
    return f"carewatch/v1/{r.town}/{r.device}/vitals", orjson.dumps(body), t


def test_the_fall_lane_judges_only_the_fall_and_the_tick_still_sees_every_sample(
        tmp_path: Path) -> None:
    config = service_config(tmp_path)
    clock = SimClock(T0)
    events: list[dict[str, Any]] = []
    pipeline, close = build_pipeline(config, clock, _Discard(), data_dir=tmp_path / "d",
                                     replay=True, on_event=events.append)
    try:
        low = [{"ts": T0 - 40 + j, "spo2": 83, "hr": 80, "activity": 0.01, "worn": True}
               for j in range(40)]  # critical hypoxemia: <= 85 % for >= 30 s, at rest
        pipeline.handle([_vitals(config, 1, {"samples": low}, T0),
                         _vitals(config, 0, {"ts": T0, "fall": True, "worn": True}, T0)])
        assert pipeline.urgent
        lane = pipeline.fall_lane(T0)
        assert [(f.kind, f.row.tolist()) for f in lane] == [("fall", [0])]
        assert {(e["kind"], e["event"]) for e in events} == {("fall", "opened")}
        assert not pipeline.urgent
        # the next tick's other detectors get the samples the lane saw; the fall rule has
        # judged them already and does not fire again
        clock.set(T0 + 1)
        ticked = pipeline.tick(T0 + 1)
        assert [(f.kind, f.row.tolist()) for f in ticked] == [("hypoxemia", [1])]
        assert sorted((e["kind"], e["event"]) for e in events) == [("fall", "opened"),
                                                                   ("hypoxemia", "opened")]
        assert pipeline.fall_lane(T0 + 1) == []  # nothing new: nothing judged
    finally:
        close()


def test_a_fall_the_lane_opened_and_cleared_is_not_opened_again_by_the_tick(
        tmp_path: Path) -> None:
    """The tick hands the fall rule the lane's samples again, older than the newest it has
    judged: a flag among them was judged already, even once its fall has cleared."""
    config = service_config(tmp_path)
    clock = SimClock(T0)
    pipeline, close = build_pipeline(config, clock, _Discard(), data_dir=tmp_path / "d",
                                     replay=True)
    try:
        samples = [{"ts": T0 - 60, "fall": True, "activity": 0.3, "worn": True}] + [
            {"ts": T0 - 50 + 10 * j, "activity": 0.5, "worn": True} for j in range(4)]
        pipeline.handle([_vitals(config, 0, {"samples": samples}, T0)])
        lane = pipeline.fall_lane(T0)
        assert [(f.kind, f.active.tolist()) for f in lane] == [("fall", [True, False])]
        clock.set(T0 + 1)
        assert [f.kind for f in pipeline.tick(T0 + 1)] == []
    finally:
        close()


def test_the_lane_judges_every_unseen_sample_in_time_order(tmp_path: Path) -> None:
    """The lane runs over everything the fall rule has not seen, not only the fall's batch:
    an impact handled earlier in the same interval is judged, before the flag."""
    config = service_config(tmp_path)
    clock = SimClock(T0)
    pipeline, close = build_pipeline(config, clock, _Discard(), data_dir=tmp_path / "d",
                                     replay=True)
    try:
        impact = {"ts": T0 - 0.5, "activity": 3.0, "worn": True}
        pipeline.handle([_vitals(config, 2, impact, T0 - 0.4)])
        pipeline.handle([_vitals(config, 2, {"ts": T0, "fall": True, "worn": True}, T0)])
        (found,) = pipeline.fall_lane(T0)
        assert found.kind == "fall" and found.row.tolist() == [2]
        fall = next(d for d in pipeline.detectors if d.kinds == ("fall",))
        assert fall.fresh.last_ts[2] == T0  # type: ignore[attr-defined]
        assert fall.last[2] == T0 - 0.5  # type: ignore[attr-defined]  # the impact's time
    finally:
        close()


class _Gate:
    """A detector that, once armed, holds its tick until a fall it publishes is queued."""

    kinds: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.publish: Any = None
        self.queued: Any = None
        self.held = False  # this tick was held until the fall was queued

    def update(self, state: TickState, now: float) -> list[Findings]:
        if self.armed.is_set():
            self.armed.clear()
            self.publish()
            wait_for(self.queued, timeout_s=10, what="the fall in the edge's inbox")
            self.held = True
        return []


class _Probe:
    """A later detector of the same tick: records whether the fall's alert is stored."""

    kinds: tuple[str, ...] = ()

    def __init__(self, gate: _Gate) -> None:
        self.gate = gate
        self.engine: Any = None
        self.resident = ""
        self.seen: list[bool] = []

    def update(self, state: TickState, now: float) -> list[Findings]:
        if self.gate.held and not self.seen:
            self.seen.append(any(a.resident_id == self.resident and a.kind == "fall"
                                 for a in self.engine.open_alerts()))
        return []


def test_a_fall_arriving_during_a_tick_is_alerted_before_the_tick_ends(
        mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = service_config(tmp_path)
    r = config.residents[0]
    gate = _Gate()
    probe = _Probe(gate)
    build = registry.build_detectors
    monkeypatch.setattr(registry, "build_detectors",
                        lambda c, d=None: [*build(c, d), gate, probe])
    watch = Client(mosquitto.port, "watch", subscribe=("carewatch/v1/+/alerts/#",))
    dev = Client(mosquitto.port, "dev")
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-lane"),
                      data_dir=tmp_path)
    try:
        service.start()
        assert service.edge.wait_connected(10)
        wait_for(lambda: service.edge.counters.subscribed, what="the subscriptions")
        probe.engine, probe.resident = service.pipeline.alerts, r.id
        gate.queued = service.edge.fall_hint.is_set
        gate.publish = lambda: dev.publish(
            f"carewatch/v1/{r.town}/{r.device}/vitals",
            {"ts": WallClock().now(), "fall": True, "worn": True}).wait_for_publish(5)
        gate.armed.set()
        wait_for(lambda: bool(probe.seen), what="the probe's look at the alert store")
        # judged between the gate and the probe, inside the tick that was running
        assert probe.seen == [True]
        wait_for(lambda: any(b.get("kind") == "fall" for _t, b in
                             watch.received(f"/alerts/{r.id}")), what="the fall's alert event")
    finally:
        dev.close()
        service.stop()
        watch.close()


def test_services_tune_the_interpreter_while_any_runs(mosquitto: MosquittoProcess,
                                                      tmp_path: Path) -> None:
    """While a service runs: the configured switch interval (the edge's thread takes a fall
    off the socket sooner), start-up objects frozen out of the cyclic collector and rare
    full collections (no 100-400 ms pauses); CPython's settings again after the last
    service stops."""
    before = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    services = [Service(service_config(tmp_path / k),
                        broker=BrokerSettings(url=mosquitto.url, client_id=f"cw-{k}"),
                        data_dir=tmp_path / k) for k in ("a", "b")]
    a, b = services
    wanted = a.config.pipeline.gil_switch_interval_ms / 1000.0
    assert wanted != before
    try:
        a.start()
        assert sys.getswitchinterval() == pytest.approx(wanted)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY != thresholds[2]
        b.start()
        a.stop()
        assert sys.getswitchinterval() == pytest.approx(wanted)  # b still runs
        assert gc.get_freeze_count() > 0
        b.stop()
        assert sys.getswitchinterval() == pytest.approx(before)
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() == 0
    finally:
        for s in services:
            s.stop()
