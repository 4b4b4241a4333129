"""Replay's spans (`carewatch.span`): judging several ticks in one pass must give exactly
what ticking one at a time gives: the same alert events byte for byte, the same
rejections, ticks and counters, on simulated days with faults and on generated streams
full of edge cases (falls, wills, duplicates, acks, silences, low batteries, hour ends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carewatch.clock import SimClock
from carewatch.pipeline import Pipeline
from carewatch.replay import ReplayResult, read_lines, replay
from carewatch.span import tick_span
from config.generate import demo_registry
from config.loader import parse_config
from config.models import Config
from detectors.base import Findings, TickState
from detectors.device import DeviceOffline, LowBattery
from ingest.publish import ListPublisher
from ingest.samples import SampleColumns
from simulators.engine import Simulation
from simulators.record import write_recording
from tests.ingest_harness import small_config

T0 = 1_764_316_800.0


def both(lines: list[bytes], config: Config, tmp: Path) -> tuple[ReplayResult, ReplayResult,
                                                                   list[Any], list[Any]]:
    out: list[tuple[ReplayResult, list[Any]]] = []
    for span in (32, 1):
        rejected: list[Any] = []
        result = replay(lines, config, data_dir=tmp / f"span-{span}", span_ticks=span,
                        on_rejected=rejected.append)
        out.append((result, rejected))
    (spanned, rej_s), (ticked, rej_t) = out
    return spanned, ticked, rej_s, rej_t


def assert_same(spanned: ReplayResult, ticked: ReplayResult, rej_s: list[Any],
                rej_t: list[Any]) -> None:
    assert [orjson.dumps(e) for e in spanned.events] == [orjson.dumps(e) for e in ticked.events]
    assert rej_s == rej_t
    assert (spanned.ticks, spanned.messages, spanned.bad_lines, spanned.acks_ignored) == (
        ticked.ticks, ticked.messages, ticked.bad_lines, ticked.acks_ignored)
    counters = {k: v for k, v in spanned.ingest.items() if k != "lag_seconds"}
    assert counters == {k: v for k, v in ticked.ingest.items() if k != "lag_seconds"}
    assert ticked.spanned_ticks == 0


def test_a_simulated_day_part_with_faults_is_the_same_spanned(tmp_path: Path) -> None:
    """30 residents, 2.2 h across two hour ends (baseline refits), the simulator's random events
    (falls, hypoxaemia, devices going dark, low batteries) and injected faults."""
    config = parse_config(demo_registry(30, seed=3))
    path = tmp_path / "rec.jsonl"
    sim = Simulation(config, 3, T0 + 1234.5, 10, 2.2, batch=1, random_rate=4.0)
    write_recording(sim, path, faults=True)
    lines = list(read_lines(path))
    spanned, ticked, rej_s, rej_t = both(lines, config, tmp_path)
    assert_same(spanned, ticked, rej_s, rej_t)
    kinds = {e["kind"] for e in ticked.events}
    assert len(ticked.events) > 20 and len(kinds) >= 4, kinds
    assert rej_t  # the faults were rejected, in the same order both ways
    assert spanned.spanned_ticks > 0.8 * spanned.ticks  # and most ticks did go in spans


def test_batched_messages_are_the_same_spanned(tmp_path: Path) -> None:
    config = parse_config(demo_registry(12, seed=5))
    path = tmp_path / "rec.jsonl"
    write_recording(Simulation(config, 5, T0, 5, 1.5, batch=6, random_rate=4.0), path)
    spanned, ticked, rej_s, rej_t = both(list(read_lines(path)), config, tmp_path)
    assert_same(spanned, ticked, rej_s, rej_t)
    assert spanned.spanned_ticks > 0


# ---------------------------------------------------------------- generated edge cases
CONFIG = small_config(residents=4, towns=2, thresholds={
    "device_offline": {"offline_s": 40}, "hypoxemia": {"duration_s": 20},
    "tachycardia": {"duration_s": 15}, "low_battery": {"threshold": 15, "clear_above": 20}})
R = CONFIG.residents
LEVELS = {"hr": [45, 75, 135, 160], "spo2": [80, 88, 97], "rr": [7, 16, 27],
          "activity": [0.0, 0.01, 0.3, 3.0], "battery": [10, 18, 60]}


@st.composite
def recordings(draw: st.DrawFn) -> list[bytes]:
    t = T0 + draw(st.sampled_from([0.0, 3590.0, 1800.5]))  # some cross an hour's end
    lines: list[bytes] = []
    vitals: list[bytes] = []
    for _ in range(draw(st.integers(5, 160))):
        t += draw(st.sampled_from([0.0, 0.4, 1.0, 1.0, 3.0, 10.0, 10.0, 30.0, 90.0]))
        r = R[draw(st.integers(0, len(R) - 1))]
        base = f"carewatch/v1/{r.town}/{r.device}/"
        kind = draw(st.integers(0, 14))
        line: dict[str, Any] = {"t": t}
        if kind <= 8:
            payload: dict[str, Any] = {"ts": t - draw(st.sampled_from([0.0, 0.2, 5.0, 70.0])),
                                       "worn": draw(st.sampled_from([True, True, False]))}
            for v, levels in LEVELS.items():
                if draw(st.booleans()) or v in ("hr", "spo2"):
                    payload[v] = draw(st.sampled_from(levels))
            if kind == 8:
                payload["fall"] = draw(st.booleans())
            line.update(topic=base + "vitals", payload=payload)
            vitals.append(orjson.dumps(line))
        elif kind == 9:
            line.update(topic=base + "status", payload={"online": draw(st.booleans())})
        elif kind == 10:
            action = draw(st.sampled_from(["ack", "resolve"]))
            line[action] = {"resident_id": r.id, "kind": draw(st.sampled_from(
                ["hypoxemia", "device_offline", "low_battery", "tachycardia", "fall"]))}
            line.update(by="carer", note="seen")
        elif kind == 11 and vitals:  # a duplicate delivery, later
            old = orjson.loads(draw(st.sampled_from(vitals)))
            line.update(topic=old["topic"], payload=old["payload"])
        elif kind == 12:
            line.update(topic=base + "vitals", payload_raw="{not json")
        elif kind == 13:
            line.update(topic=base + "vitals", payload={"samples": [
                {"ts": t - 2.0, "hr": 140, "spo2": 85}, {"ts": t - 1.0, "hr": 150, "spo2": 84}]})
        lines.append(orjson.dumps(line))
    lines.append(orjson.dumps({"t": t + 200.0}))  # let the clock run past the last silence
    return lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recordings())
def test_generated_streams_are_the_same_spanned(tmp_path_factory: pytest.TempPathFactory,
                                                lines: list[bytes]) -> None:
    spanned, ticked, rej_s, rej_t = both(lines, CONFIG, tmp_path_factory.mktemp("span"))
    assert_same(spanned, ticked, rej_s, rej_t)


# ---------------------------------------------------------------- the promises
def state_of(pipeline: Pipeline, new: SampleColumns) -> TickState:
    return TickState(new=new, store=pipeline.store, devices=pipeline.devices,
                     started_at=pipeline.started_at)


def samples(rows: list[int], ts: float, battery: float = np.nan) -> SampleColumns:
    c = SampleColumns.empty(len(rows))
    c.row[:] = rows
    c.ts[:] = ts
    c.hr[:] = 70
    c.worn[:] = 1
    c.fall[:] = -1
    c.battery[:] = battery
    return c


def test_device_offline_is_quiet_until_the_first_device_could_fall_silent() -> None:
    p = Pipeline(CONFIG, SimClock(T0), ListPublisher())
    det = DeviceOffline(p.devices)
    p.store.append(samples([0, 1, 2, 3], T0), T0)
    p.store.append(samples([2], T0 + 100), T0 + 100)
    offline_s = 600.0
    assert det.quiet_until(state_of(p, samples([1], T0 + 5)), samples([1], T0 + 5)) \
        == pytest.approx(T0 + offline_s - 1e-3)
    det.active[3] = True  # device 3 is offline: its data would clear it inside the span
    assert det.quiet_until(state_of(p, samples([3], T0 + 5)),
                           samples([3], T0 + 5)) == -np.inf
    assert det.quiet_until(state_of(p, samples([1], T0 + 5)), samples([1], T0 + 5)) \
        == pytest.approx(T0 + offline_s - 1e-3)
    p.store.set_status(1, False, None, T0 + 101)  # a will not yet judged
    assert det.quiet_until(state_of(p, samples([0], T0 + 5)),
                           samples([0], T0 + 5)) == -np.inf


def test_low_battery_is_quiet_only_if_no_reading_crosses() -> None:
    p = Pipeline(CONFIG, SimClock(T0), ListPublisher())
    det = LowBattery(p.devices)
    p.store.append(samples([0, 1, 2, 3], T0, battery=60), T0)
    st_ = state_of(p, samples([], T0))
    assert det.quiet_until(st_, samples([1], T0 + 1, battery=50)) == np.inf
    assert det.quiet_until(st_, samples([1], T0 + 1, battery=15)) == -np.inf
    det.active[2] = True
    p.store.battery[2] = 12
    assert det.quiet_until(st_, samples([2], T0 + 1, battery=19)) == np.inf  # hysteresis
    assert det.quiet_until(st_, samples([2], T0 + 1, battery=21)) == -np.inf


class Liar:
    """A clock-driven detector that says it stays quiet, then finds something."""

    kinds = ("low_battery",)

    def quiet_until(self, state: TickState, new: SampleColumns) -> float:
        return np.inf

    def update(self, state: TickState, now: float) -> list[Findings]:
        return [Findings("low_battery", np.array([0], np.int32), np.array([1], np.int8),
                         np.array([True]), np.array([now]), {})]


def test_a_broken_quiet_promise_fails_loudly() -> None:
    clock = SimClock(T0)
    p = Pipeline(CONFIG, clock, ListPublisher(), detectors=[Liar()])
    r = R[0]
    msg = (f"carewatch/v1/{r.town}/{r.device}/vitals", orjson.dumps({"ts": T0, "hr": 70}), T0)
    with pytest.raises(RuntimeError, match="said was quiet"):
        tick_span(p, clock, [(T0 + 1, [msg]), (T0 + 2, [])])


def test_baseline_deviation_found_inside_spans_is_the_same(tmp_path: Path) -> None:
    """A fitted baseline (as from a first day) scores samples inside spans: the same
    findings, at the same ticks, as ticking one at a time."""
    from carewatch.app import build_pipeline
    from detectors.baseline import BaselineDeviation
    from detectors.bench import fit_baseline

    config = small_config(residents=4, towns=2, thresholds={
        "baseline_deviation": {"duration_s": 30, "clear_s": 0}})
    start = T0 + 600.0  # mid-hour: the refit stays idle
    runs = []
    for name in ("ticked", "spanned"):
        clock = SimClock(start)
        events: list[dict[str, Any]] = []
        p, close = build_pipeline(config, clock, ListPublisher(), data_dir=tmp_path / name,
                                  replay=True, on_event=events.append)
        p.tick(start)
        fit_baseline([d for d in p.detectors if isinstance(d, BaselineDeviation)])
        runs.append((p, clock, events, close))
    msgs: dict[float, list[Any]] = {}
    for k in range(120):  # each device every 5 s, one a second; hr far off for 3 min
        i = k % 4
        t = start + 1 + k
        hr = 140 if 12 <= k < 80 and i < 2 else 75
        r = config.residents[i]
        msgs[t + 1] = [(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        orjson.dumps({"ts": t, "hr": hr, "spo2": 96, "rr": 16,
                                      "activity": 0.02, "worn": True}), t)]
    ticks = sorted(msgs)
    try:
        p, clock, ticked, _ = runs[0]
        for t in ticks:
            clock.set(t)
            p.handle(msgs[t])
            p.tick(t)
        p, clock, spanned, _ = runs[1]
        for i in range(0, len(ticks), 4):
            assert tick_span(p, clock, [(t, msgs[t]) for t in ticks[i:i + 4]])
    finally:
        for run in runs:
            run[3]()
    assert any(e["kind"] == "baseline_deviation" for e in ticked)
    assert [orjson.dumps(e) for e in spanned] == [orjson.dumps(e) for e in ticked]
