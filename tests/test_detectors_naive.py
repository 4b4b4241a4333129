"""The per-device Python loop (`detectors.naive`) finds what the vectorised detectors find:
the same (kind, row, severity, active) findings tick by tick, with the same onsets and
evidence, on a simulated day and a half with every kind of event, on dense benchmark-like
ticks with injected episodes, and on generated near-threshold streams with per-resident
parameters. This is what makes the benchmark's "same rules" ratio a fair one."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from detectors_naive_harness import Twin, chunk_samples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.generate import demo_registry
from config.loader import parse_config
from detectors.registry import DETECTORS, all_kinds, resolve_params
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from simulators.engine import Simulation
from simulators.events import make_event

START = 1764259200.0  # 2025-11-28 00:00 Asia/Shanghai
H = 3600.0


def _scenario_config() -> Any:
    """24 residents with deployment, town and resident overrides (flags and unset optional
    thresholds included)."""
    data = demo_registry(24, seed=4, towns=3)
    data["thresholds"] = {"baseline_deviation": {"min_minutes": 10},
                          "low_battery": {"threshold": 30.0, "clear_above": 33.0}}
    data["towns"][0]["thresholds"] = {"tachycardia": {"threshold": 125.0},
                                      "news2": {"rest_g": 0.15}}
    per_resident: dict[int, dict[str, Any]] = {
        1: {"hypoxemia": {"threshold": 91.0, "duration_s": 90.0}},
        2: {"fall": {"use_flag": False}},
        3: {"tachycardia": {"critical_threshold": None}},
        4: {"news2": {"single_three": False}},
        5: {"device_offline": {"use_last_will": False}},
        6: {"bradycardia": {"rest_g": None}, "inactivity": {"awake_start_h": 6.0}},
        7: {"not_worn": {"duration_s": 900.0, "clear_s": 60.0}},
        8: {"fever": {"threshold": 37.6, "max_jump": 1.0}},
    }
    for i, over in per_resident.items():
        data["residents"][i]["thresholds"] = over
    data["residents"][9]["conditions"] = ["copd"]
    return parse_config(data)


def _events(day2: float) -> list[Any]:
    """One event of every kind on day 2 (the baseline is fitted from day 1)."""
    kinds = ["hypoxemia", "bradycardia", "tachycardia", "tachypnoea", "bradypnoea", "fever",
             "hypothermia", "hypotension", "hypertensive_crisis", "deterioration",
             "device_offline", "low_battery", "fall"]
    out = [make_event(i + 1, kind, day2 + 5.5 * H + 600.0 * i) for i, kind in enumerate(kinds)]
    out.append(make_event(9, "hypoxemia", day2 + 6 * H, severity="critical"))  # copd
    out.append(make_event(14, "fall", day2 + 7 * H, flag=False))  # impact, stillness
    out.append(make_event(2, "fall", day2 + 8 * H))  # flag ignored for resident 2
    out.append(make_event(15, "inactivity", day2 + 7 * H))
    out.append(make_event(16, "not_worn", day2 + 8 * H))
    out.append(make_event(7, "not_worn", day2 + 9 * H, 1200.0))
    return out


@pytest.mark.timeout(240)
def test_simulated_day_and_a_half_with_every_kind_of_event() -> None:
    config = _scenario_config()
    devices = DeviceTable.from_config(config)
    day2 = START + 24 * H
    sim_start = START + 5 * H  # day 1 05:00: baseline slots for day 2's event hours
    sim = Simulation(config, 8, sim_start, 30.0, 30.0, 1, _events(day2))
    twin = Twin(devices, sim_start, resolve_params(config, devices))
    parts = [chunk_samples(chunk) for chunk in sim.chunks(prefetch=False)]
    samples = SampleColumns.concat([p[0] for p in parts])
    arrive = np.concatenate([p[1] for p in parts])
    status = sorted(sim.status_changes(), key=lambda s: s[:2])
    tick_s, now, si = 60.0, sim_start, 0  # two samples per device a tick
    while now < arrive.max():
        now += tick_s
        # two receipts per tick (the store merges them), then status messages
        for lo, hi in ((now - tick_s, now - tick_s / 2), (now - tick_s / 2, now)):
            twin.receive(samples.take((arrive > lo) & (arrive <= hi)), hi)
        while si < len(status) and status[si][0] <= now:
            t, row, payload = status[si]
            twin.status(row, bool(payload["online"]), None, t)
            si += 1
        twin.tick(now)
    assert twin.baseline.fits > 24, "the baseline refits every hour"
    assert twin.kinds(active=True) >= set(all_kinds()), sorted(twin.kinds(active=True))
    assert twin.kinds(active=False) >= {"hypoxemia", "fever", "fall", "device_offline",
                                        "not_worn", "low_battery"}


# ---------------------------------------------------------------- dense ticks, as benched
NAN = float("nan")
VITALS_OFF = {"hr": NAN, "spo2": NAN, "rr": NAN, "temp_c": NAN, "sbp": NAN, "dbp": NAN}
# (rows, ticks, column values): abnormal episodes over the benchmark's random vitals
EPISODES: list[tuple[range, range, dict[str, float]]] = [
    (range(0, 5), range(20, 80), {"spo2": 87.0, "activity": 0.0}),  # hypoxemia
    (range(5, 10), range(20, 80), {"spo2": 88.0, "activity": 0.1}),  # at the rest limit
    (range(10, 15), range(20, 80), {"spo2": 82.0, "activity": 0.0}),  # critical / copd
    (range(20, 30), range(30, 90), {"hr": 140.0, "activity": 0.05}),  # tachycardia at rest
    (range(30, 35), range(30, 90), {"hr": 160.0, "activity": 0.5}),  # moving: gated
    (range(30, 35), range(90, 120), {"hr": 160.0, "activity": 0.0}),  # then at rest
    (range(40, 45), range(50, 51), {"fall": 1}),  # device flag
    (range(45, 55), range(60, 61), {"activity": 3.0}),  # impact ...
    (range(45, 50), range(61, 75), {"activity": 0.01}),  # ... then stillness
    (range(50, 55), range(61, 75), {"activity": 0.5}),  # ... then movement
    (range(60, 70), range(10, 100), {"temp_c": 38.4}),  # fever
    (range(70, 80), range(100, 130, 29), {"sbp": 85.0, "dbp": 55.0}),  # BP pairs
    (range(80, 85), range(100, 130, 29), {"sbp": 190.0, "dbp": 125.0}),
    (range(90, 100), range(100, 200), {**VITALS_OFF, "worn": 0, "activity": 0.0}),  # off
    (range(120, 130), range(0, 360), {"activity": 0.6, "hr": 190.0, "spo2": 70.0}),  # artefacts
    (range(130, 140), range(0, 360), {"hr": 38.0, "activity": 0.0}),  # flat-line
    (range(140, 150), range(0, 360, 5), {"spo2": 75.0, "activity": 0.0}),  # jumps
    (range(150, 160), range(0, 360), {"activity": 0.0}),  # inactivity
    (range(160, 165), range(20, 100), {"rr": 6.0}),
    (range(165, 170), range(20, 100), {"rr": 28.0}),
    (range(170, 180), range(10, 100), {"temp_c": 34.5}),
    (range(180, 190), range(100, 300), {"hr": 115.0, "rr": 23.0, "sbp": 95.0, "temp_c": 37.8,
                                        "spo2": 93.0, "activity": 0.15}),  # NEWS2, at rest
    # for rows 180-184 only (rest_g 0.15 there)
    (range(190, 200), range(150, 300), {"hr": 105.0, "activity": 0.0}),  # off baseline
]


def _dense_params(n: int) -> dict[str, list[Any]]:
    """Shared and per-row overrides (per-row arrays take the vector rules' other paths)."""
    def rows(name: str, special: range, **over: Any) -> list[Any]:
        base, cls = DETECTORS[name].Params(), DETECTORS[name].Params
        return [cls(**over) if i in special else base for i in range(n)]

    everyone = range(n)
    brady = rows("bradycardia", range(130, 135), flat_samples=0)
    brady[135:140] = [DETECTORS["bradycardia"].Params(flat_samples=3)] * 5  # stuck sooner
    return {
        "tachycardia": rows("tachycardia", range(20, 25), threshold=125.0)[:30]
        + rows("tachycardia", range(30, 35), recovery_s=60.0)[30:],  # rest after motion
        "bradycardia": brady,
        "news2": rows("news2", range(180, 185), rest_g=0.15),
        "fall": rows("fall", range(40, 42), use_flag=False),
        "device_offline": rows("device_offline", range(205, 207), use_last_will=False),
        "inactivity": rows("inactivity", everyone, duration_s=1200.0),
        "not_worn": rows("not_worn", everyone, duration_s=600.0, clear_s=30.0),
        "low_battery": rows("low_battery", everyone, threshold=15.3),  # not a float32
    }


@pytest.mark.timeout(120)
def test_dense_ticks_with_injected_episodes() -> None:
    from detectors.bench import synthetic_devices, tick_samples

    n, tick_s = 240, 10.0
    t0 = START + 9 * H  # awake hours
    devices = synthetic_devices(n, seed=2)
    rng = np.random.default_rng(3)
    usual = {"hr": (75.0, 5.0), "spo2": (96.0, 2.5), "rr": (16.0, 3.0), "temp_c": (36.8, 0.5)}
    baseline = {v: (np.full((n, 24), m), np.full((n, 24), s)) for v, (m, s) in usual.items()}
    twin = Twin(devices, t0, _dense_params(n), baseline)
    for k in range(360):
        now = t0 + tick_s * (k + 1)
        c = tick_samples(n, now, rng)
        c.battery[:220] = np.nan
        c.battery[210:220] = 16.0 - 0.1 * k if k < 250 else 25.0  # down through 15.3
        for rows, ticks, values in EPISODES:
            if k in ticks:
                for col, value in values.items():
                    getattr(c, col)[rows.start:rows.stop] = value
        keep = np.ones(n, bool)
        keep[200:205] = not 100 <= k < 200  # silent devices
        keep[205:210] = not 110 <= k < 220  # gone, with a Last Will
        twin.receive(c.take(keep), now)
        if k == 120:
            for row in range(205, 210):
                twin.status(row, False, None, now - 1.0)
        if k in (220, 260):
            for row in range(205, 220, 2):
                twin.status(row, True, 10.0 if k == 260 else None, now)
        twin.tick(now)
    assert twin.kinds(active=True) >= set(all_kinds())
    assert twin.kinds(active=False) >= {"hypoxemia", "fever", "fall", "device_offline",
                                        "not_worn", "low_battery", "inactivity"}


# ---------------------------------------------------------------- generated streams
N = 4
SUSTAINED_VARIANTS: list[dict[str, Any]] = [
    {"duration_s": 20.0, "clear_s": 0.0, "clear_margin": 0.0, "max_gap_s": 15.0},
    {"critical_threshold": None, "rest_g": 0.3, "recovery_s": 30.0, "flat_samples": 3,
     "max_jump": 5.0},
    {"rest_g": None, "critical_duration_s": 10.0, "flat_samples": 0, "max_jump": 1e9},
]
# per detector: parameter variants a row may take (besides the defaults)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    **{name: SUSTAINED_VARIANTS for name in ("hypoxemia", "bradycardia", "tachycardia",
                                             "bradypnoea", "tachypnoea", "fever",
                                             "hypothermia")},
    "news2": [{"rest_g": 0.15, "single_three": False, "duration_s": 30.0, "max_age_s": 60.0},
              {"high_score": 5, "medium_score": 3, "max_gap_s": 20.0, "clear_s": 0.0}],
    "hypotension": [{"readings": 1}, {"readings": 3, "max_interval_s": 60.0}],
    "hypertensive_crisis": [{"readings": 1, "clear_margin": 0.0}, {"max_interval_s": 30.0}],
    "fall": [{"use_flag": False, "still_s": 20.0, "settle_s": 5.0},
             {"impact_g": 2.95, "still_g": 0.02, "clear_s": 0.0, "hold_s": 60.0,
              "max_gap_s": 15.0}],
    "inactivity": [{"duration_s": 60.0, "still_g": 0.05, "clear_g": 0.25},
                   {"awake_start_h": 0.0, "awake_end_h": 24.0, "duration_s": 0.0,
                    "max_gap_s": 15.0}],
    "not_worn": [{"duration_s": 60.0, "clear_s": 20.0},
                 {"awake_start_h": 0.0, "awake_end_h": 12.5, "max_gap_s": 15.0}],
    "device_offline": [{"offline_s": 60.0}, {"use_last_will": False, "offline_s": 45.0}],
    "low_battery": [{"threshold": 15.3, "clear_above": 15.3},
                    {"threshold": 21.0, "clear_above": 30.0}],
    "baseline_deviation": [{"k": 2.0, "clear_k": 1.5, "duration_s": 30.0, "hr_min_abs": 5.0,
                            "spo2_min_abs": 1.0, "rest_g": 0.3},
                           {"duration_s": 0.0, "clear_s": 0.0, "max_gap_s": 15.0}],
}
LEVELS = {"hr": [38.0, 45.0, 75.0, 127.0, 132.0, 152.0], "spo2": [79.0, 84.0, 88.0, 97.0],
          "rr": [7.0, 15.0, 26.0], "temp_c": [34.8, 36.8, 38.2], "sbp": [85.0, 120.0, 185.0],
          "dbp": [70.0, 125.0], "activity": [0.0, 0.01, 0.05, 0.1, 0.15, 0.3, 2.5, 3.0],
          "battery": [14.0, 15.3, 16.0, 21.0, 31.0]}
STARTS = [START + 6.98 * H, START + 12 * H, START + 20.98 * H]  # near the awake edges


@st.composite
def param_rows(draw: Any) -> dict[str, list[Any]]:
    """Per detector, each row's model: the default or one of its variants (shared objects)."""
    out: dict[str, list[Any]] = {}
    for name, variants in VARIANTS.items():
        cls = DETECTORS[name].Params
        models = [cls(), *(cls(**v) for v in variants)]
        out[name] = [models[i] for i in draw(st.lists(st.integers(0, len(variants)),
                                                       min_size=N, max_size=N))]
    return out


@st.composite
def receipts(draw: Any, t0: float) -> tuple[SampleColumns, np.ndarray]:
    """Near-threshold samples of a few devices and when each arrives (some late)."""
    parts, arrivals = [], []
    for row in range(N):
        n = draw(st.integers(0, 80))
        if n == 0:
            continue
        steps = draw(st.lists(st.sampled_from([0.0, 5.0, *[10.0] * 6, 40.0, 200.0]),
                              min_size=n, max_size=n))
        c = SampleColumns.empty(n)
        c.row[:] = row
        c.ts[:] = t0 + np.cumsum(steps)  # a zero step repeats a timestamp
        cut = sorted(draw(st.lists(st.integers(1, n), max_size=2)))  # steady segments
        for v, levels in LEVELS.items():
            x = np.empty(n, np.float32)
            for lo, hi in itertools.pairwise([0, *cut, n]):
                x[lo:hi] = draw(st.sampled_from([*levels, NAN]))
            flips = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
            flips &= np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
            x[flips] = draw(st.sampled_from([*levels, NAN]))  # strays, jumps
            getattr(c, v)[:] = x
        c.worn[:] = draw(st.lists(st.sampled_from([1, 1, 1, 0, -1]), min_size=n, max_size=n))
        c.fall[:] = draw(st.lists(st.sampled_from([-1, 0, 0, 1]), min_size=n, max_size=n))
        delay = draw(st.lists(st.sampled_from([0.2, 0.2, 0.2, 25.0, 90.0]), min_size=n,
                              max_size=n))
        parts.append(c)
        arrivals.append(c.ts + np.array(delay))
    if not parts:
        return SampleColumns.empty(), np.zeros(0)
    return SampleColumns.concat(parts), np.concatenate(arrivals)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_streams_with_per_row_parameters(data: Any) -> None:
    t0 = data.draw(st.sampled_from(STARTS))
    samples, arrive = data.draw(receipts(t0))
    table = DeviceTable.from_config(parse_config(
        {**demo_registry(N, seed=3, towns=2), "thresholds": {}}))
    devices = DeviceTable(**{**table.__dict__, "conditions": (frozenset(), frozenset({"copd"}),
                                                               frozenset(), frozenset())})
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    baseline = {v: (rng.choice(LEVELS[v], (N, 24)), rng.choice([0.5, 2.0, 5.0], (N, 24)))
                for v in ("hr", "spo2", "rr", "temp_c")}
    baseline["hr"][0][rng.random((N, 24)) < 0.3] = NAN  # some slots unfitted
    twin = Twin(devices, t0, data.draw(param_rows()), baseline)
    statuses = data.draw(st.lists(st.tuples(st.integers(0, N - 1), st.booleans(),
                                            st.sampled_from([None, 10.0, 50.0]),
                                            st.floats(0.0, 1500.0),
                                            st.sampled_from([None, 0.0, 3.0])), max_size=4))
    # a status's own ts (None: not given) some seconds before its receipt
    status = sorted(((t0 + dt, row, online, b, None if age is None else t0 + dt - age)
                     for row, online, b, dt, age in statuses), key=lambda s: s[:2])
    tick_s = data.draw(st.sampled_from([5.0, 10.0, 30.0, 60.0]))
    end = max(float(arrive.max()) if len(arrive) else t0, status[-1][0] if status else t0)
    now, si = t0, 0
    while now < end + 120.0:
        now += tick_s
        for lo, hi in ((now - tick_s, now - tick_s / 3), (now - tick_s / 3, now)):
            twin.receive(samples.take((arrive > lo) & (arrive <= hi)), hi)
            while si < len(status) and status[si][0] <= hi:
                at, row, online, battery, ts = status[si]
                twin.status(row, online, battery, at, ts)
                si += 1
        twin.tick(now)


def test_activity_at_a_per_resident_rest_threshold_counts_as_rest() -> None:
    # float32 activity 0.15 against a 0.15 threshold: rest, whether the threshold is shared
    # or some resident has another (the vector rules compare in float32 either way)
    from detectors_harness import opened, run_one, series

    from detectors.news2 import News2
    from detectors.sustained import Hypoxemia

    spo2 = [97.0] * 3 + [88.0] * 8
    for rest in ([0.15, 0.15], [0.15, 0.3]):
        det = Hypoxemia(2, [Hypoxemia.Params(rest_g=g) for g in rest])
        assert [r["severity"] for r in opened(run_one(det, series(0, START, spo2,
                                                                   activity=0.15)))] == [3]
        news = News2(2, [News2.Params(rest_g=g, duration_s=0.0) for g in rest])
        got = opened(run_one(news, series(0, START, [84.0] * 3, activity=0.15)))
        assert got and got[0]["evidence"]["spo2"] == 84.0


def test_impact_and_stillness_exactly_at_the_fall_thresholds() -> None:
    # 2.5 g then 0.05 g (float32(0.05) > 0.05) is a fall on both sides, 0.06 g is not, with
    # the thresholds shared or per row (row 2 then allows 0.06 g)
    from detectors.fall import Fall

    devices = DeviceTable.from_config(parse_config(demo_registry(3, seed=3, towns=1)))
    default, loose = Fall.Params(), Fall.Params(still_g=0.06)
    for models, expect in (([default] * 3, {0}), ([default, default, loose], {0, 2})):
        twin = Twin(devices, START, {"fall": models})
        c = SampleColumns.empty(3 * 8)
        c.row[:] = np.repeat([0, 1, 2], 8)
        c.ts[:] = np.tile(START + 10.0 * np.arange(8), 3)
        c.activity[:] = [g for still in (0.05, 0.06, 0.06) for g in [0.2, 2.5] + [still] * 6]
        c.worn[:] = 1
        twin.receive(c, START + 75.0)
        twin.tick(START + 75.0)
        assert {k[1] for k in twin.seen if k[0] == "fall" and k[3]} == expect
