"""Table-driven tests of the other rules: blood pressure, NEWS2, fall, inactivity, not worn,
device offline, low battery, baseline deviation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from detectors_harness import Feeder, cols, local, opened, run_one, series, table

from detectors.activity import Inactivity, NotWorn
from detectors.baseline import BaselineDeviation
from detectors.bp import HypertensiveCrisis, Hypotension
from detectors.device import DeviceOffline, LowBattery
from detectors.fall import Fall
from detectors.news2 import (
    _SPO2_COPD_THR,
    _SPO2_THR,
    _THR,
    PARAMS,
    News2,
    band_scores,
    news2_scores,
)
from ingest.samples import SampleColumns

T0 = 1_764_316_800.0
H = 3600.0


def bp(times: list[float], sbp: list[float], dbp: list[float] | None = None) -> SampleColumns:
    dbp = dbp if dbp is not None else [70.0] * len(times)
    return cols(0, T0 + np.asarray(times), sbp=sbp, dbp=dbp, worn=1)


@pytest.mark.parametrize(("cls", "times", "sbp", "dbp", "expect"), [
    (Hypotension, [0, 1800], [90, 90], None, True),
    (Hypotension, [0, 1800], [91, 85], None, False),
    (Hypotension, [0], [80], None, False),  # one reading is not two
    (Hypotension, [0, 7200], [85, 85], None, True),  # at most 2 h apart
    (Hypotension, [0, 7300], [85, 85], None, False),
    (Hypotension, [0, 900, 1800], [85, 100, 85], None, False),  # a normal one breaks it
    (HypertensiveCrisis, [0, 1800], [180, 185], None, True),
    (HypertensiveCrisis, [0, 1800], [179, 179], [119, 119], False),
    (HypertensiveCrisis, [0, 1800], [150, 150], [120, 121], True),
    (HypertensiveCrisis, [0, 1800], [190, 150], [80, 125], True),  # either criterion
])
def test_blood_pressure_two_readings_in_a_row(cls: Any, times: list[float], sbp: list[float],
                                             dbp: list[float] | None, expect: bool) -> None:
    got = opened(run_one(cls(1), bp(times, sbp, dbp)))
    assert bool(got) == expect
    if expect:
        assert got[0]["onset"] == T0 + times[-2] and got[0]["severity"] == 3


def test_blood_pressure_streak_survives_samples_without_bp_and_clears() -> None:
    feeder = Feeder([Hypotension(1)], 1)
    other = series(0, T0 + 10, [70.0] * 100, dt=10.0, vital="hr")
    batch = SampleColumns.concat([bp([0, 1200], [85, 88]), other])
    got = feeder.tick(batch, T0 + 1300)
    assert [(r["active"], r["onset"]) for r in got] == [(True, T0)]
    assert feeder.tick(bp([2000], [93]), T0 + 2000) == []  # inside the hysteresis margin
    got = feeder.tick(bp([3000], [96]), T0 + 3000)
    assert [r["active"] for r in got] == [False]


def test_news2_table() -> None:
    nan = np.nan
    values = {"rr": np.array([8, 9, 12, 21, 25, nan]),
              "spo2": np.array([91, 92, 94, 96, 86, nan]),
              "sbp": np.array([90, 91, 101, 111, 220, nan]),
              "hr": np.array([40, 41, 91, 111, 131, nan]),
              "temp_c": np.array([35.0, 35.1, 36.1, 38.1, 39.1, nan])}
    s = news2_scores(values, np.zeros(6, bool))
    assert list(s["rr"]) == [3, 1, 0, 2, 3, 0]
    assert list(s["spo2"]) == [3, 2, 1, 0, 3, 0]
    assert list(s["sbp"]) == [3, 2, 1, 0, 3, 0]
    assert list(s["hr"]) == [3, 1, 1, 2, 3, 0]
    assert list(s["temp_c"]) == [3, 1, 0, 1, 2, 0]
    s2 = news2_scores({**values, "spo2": np.array([83, 84, 86, 88, 97, nan])}, np.ones(6, bool))
    assert list(s2["spo2"]) == [3, 2, 1, 0, 0, 0]


def test_news2_band_scores_chart_as_the_tables() -> None:
    """The detector scores float32 readings by comparing them with float32 edges; the charted
    tables round the float64 reading first. They agree on every reading near every edge (each
    of the 8 float32 neighbours on both sides), on a fine grid and on random readings."""
    rng = np.random.default_rng(7)
    near = []
    for edge in np.concatenate([_THR.ravel(), _SPO2_THR, _SPO2_COPD_THR]):
        if np.isfinite(edge):
            x = np.float32(edge)
            for _ in range(8):
                x = np.nextafter(x, np.float32(-np.inf))
            for _ in range(17):
                near.append(x)
                x = np.nextafter(x, np.float32(np.inf))
    x = np.concatenate([near, np.arange(-20, 520, 0.05), np.arange(30, 42, 0.001),
                        rng.uniform(-10, 600, 100_000), [np.inf, -np.inf, 1e30]]).astype(np.float32)
    val = np.tile(x, (len(PARAMS), 1))
    for copd in (False, True):
        want = news2_scores({v: x.astype(np.float64) for v in PARAMS}, np.full(len(x), copd))
        spo2_thr = np.repeat(np.array(_SPO2_COPD_THR, np.float32)[:, None], len(x), axis=1)
        got = band_scores(val, spo2_thr if copd else None)
        for i, v in enumerate(PARAMS):
            assert np.array_equal(got[i], want[v]), (v, copd, x[got[i] != want[v]][:5])


def news_stream(seconds: float, **vitals: float) -> SampleColumns:
    n = int(seconds // 10) + 1
    base = {"hr": 75.0, "spo2": 97.0, "rr": 15.0, "temp_c": 36.8, "sbp": 125.0, "activity": 0.0}
    base.update(vitals)
    return cols(0, T0 + 10.0 * np.arange(n), worn=1, **base)


@pytest.mark.parametrize(("vitals", "seconds", "expect"), [
    ({"hr": 135, "rr": 26, "spo2": 93}, 300, 3),  # 3 + 3 + 2 = 8: high
    ({"hr": 135, "rr": 26, "spo2": 93}, 290, 0),  # one sample short of 5 min
    ({"hr": 115, "rr": 22, "temp_c": 38.5}, 300, 2),  # 2 + 2 + 1 = 5: medium
    ({"hr": 115, "rr": 22}, 600, 0),  # 4: nothing
    ({"rr": 26}, 300, 2),  # a single parameter scoring 3
    ({"hr": 115, "rr": 22, "temp_c": 38.5, "spo2": 94, "sbp": 105}, 300, 3),  # 7
])
def test_news2_levels(vitals: dict[str, float], seconds: float, expect: int) -> None:
    got = opened(run_one(News2(1), news_stream(seconds, **vitals)))
    assert [r["severity"] for r in got][-1:] == ([expect] if expect else [])


def test_news2_copd_scale_and_stale_values() -> None:
    stream = news_stream(400, spo2=87)
    assert opened(run_one(News2(table(1, copd=(0,))), stream)) == []  # scale 2: 87 scores 1
    assert [r["severity"] for r in opened(run_one(News2(table(1)), stream))] == [2]
    # a temperature of 39.5 read once, 20 min ago, no longer counts
    old = cols(0, T0 - 1200, temp_c=39.5, worn=1)
    stream = SampleColumns.concat([old, news_stream(600, hr=115, rr=22)])
    assert opened(run_one(News2(1), stream)) == []


def fall_stream(activity: list[float], fall: list[int] | None = None, worn: int = 1,
                dt: float = 10.0) -> SampleColumns:
    ts = T0 + dt * np.arange(len(activity))
    return cols(0, ts, activity=activity, fall=fall if fall is not None else -1, worn=worn)


@pytest.mark.parametrize(("activity", "fall", "worn", "expect_onset"), [
    ([0.2, 0.3, 0.2], [0, 1, 0], 1, T0 + 10),  # the device's own flag
    ([0.2, 0.3, 0.2], [0, 1, 0], 0, None),  # flag on a device off the wrist
    ([0.2, 3.0] + [0.01] * 6, None, 1, T0 + 10),  # impact, 60 s still
    ([0.2, 3.0] + [0.01] * 5, None, 1, None),  # 50 s still
    ([0.2, 2.4] + [0.01] * 10, None, 1, None),  # below the impact threshold
    ([0.2, 2.5] + [0.05] * 6, None, 1, T0 + 10),  # exactly 2.5 g, then exactly 0.05 g
    ([0.2, 2.5] + [0.06] * 6, None, 1, None),  # 0.06 g is not still
    ([0.2, 3.0, 0.3] + [0.01] * 6, None, 1, T0 + 10),  # settling right after impact
    # moving while settling, then still for 50 s only: the stillness is timed from the
    # movement, not the impact (it fired 60 s after the impact)
    ([0.2, 3.0, 0.8] + [0.01] * 5, None, 1, None),
    ([0.2, 3.0, 0.01, 0.01, 0.4] + [0.01] * 6, None, 1, None),  # got up again
    ([0.2, 3.0] + [0.01] * 10, None, 0, None),  # device dropped on the floor
])
def test_fall(activity: list[float], fall: list[int] | None, worn: int,
              expect_onset: float | None) -> None:
    got = opened(run_one(Fall(1), fall_stream(activity, fall, worn)))
    assert [r["onset"] for r in got] == ([expect_onset] if expect_onset else [])
    assert all(r["severity"] == 4 for r in got)


def test_fall_thresholds_compare_as_float32_shared_or_per_resident() -> None:
    # float32(0.05) > 0.05: a float64 comparison would never count 0.05 g as still
    stream = fall_stream([0.2, 2.5] + [0.05] * 6)
    for still in ([0.05, 0.05], [0.05, 0.02]):
        det = Fall(2, [Fall.Params(still_g=g) for g in still])
        got = opened(run_one(det, stream))
        assert [(r["onset"], r["evidence"]["impact_g"]) for r in got] == [(T0 + 10, 2.5)]


def test_fall_clears_after_sustained_movement_and_flag_burst_fires_once() -> None:
    feeder = Feeder([Fall(1)], 1)
    got = feeder.tick(fall_stream([0.2, 3.0, 0.1, 0.1], [0, 1, 1, 1]), T0 + 40)
    assert [r["active"] for r in got] == [True]
    later = cols(0, T0 + 100 + 10.0 * np.arange(5), activity=0.5, worn=1)
    assert [r["active"] for r in feeder.tick(later, T0 + 150)] == [False]


def test_fall_candidate_and_active_fall_carry_across_ticks_one_sample_each() -> None:
    # the detector skips rows with nothing pending while no row has anything pending: an
    # impact in one tick must keep its stillness counted in the next ticks, and an active
    # fall must still clear, after which a second fall opens again
    feeder = Feeder([Fall(3)], 3)
    activity = [0.2, 3.0] + [0.01] * 6 + [0.5] * 4 + [0.2, 3.1] + [0.01] * 6
    got = []
    for i, a in enumerate(activity):
        t = T0 + 10.0 * i
        got += feeder.tick(cols(1, t, activity=a, worn=1), t)
    assert [(r["row"], r["active"], r["onset"]) for r in got] == [
        (1, True, T0 + 10), (1, False, T0 + 10), (1, True, T0 + 130)]


def test_a_late_fall_flag_fires_once_at_its_own_ts() -> None:
    # a device cut off for an hour sends its live reading first, then its backlog, in
    # which it flagged a fall: the flag counts, dated by its own ts
    feeder = Feeder([Fall(2)], 2)
    live = cols(0, T0 + 3600, activity=0.2, worn=1)
    assert feeder.tick(live, T0 + 3600) == []
    backlog = cols(0, T0 + 600 + 10.0 * np.arange(6), activity=[0.2, 0.3, 0.01, 0.01, 0.4, 0.2],
                   fall=[0, 1, 0, 1, 0, 0], worn=1)
    got = feeder.tick(backlog, T0 + 3601)
    assert [(r["row"], r["active"], r["onset"], r["evidence"]["source"]) for r in got] == [
        (0, True, T0 + 610, "device")]
    # the condition lapses on the next live sample (hold_s after its onset); the alert it
    # opened stays open until someone resolves it
    assert [r["active"] for r in feeder.tick(cols(0, T0 + 3610, activity=0.2, worn=1),
                                             T0 + 3610)] == [False]
    # the same backlog again (a broker's redelivery): those flags were judged already
    assert feeder.tick(backlog, T0 + 3611) == []
    # a flag older than one already judged in time order does not fire either; one off
    # the wrist never does
    feeder.tick(cols(1, T0 + 100, activity=0.2, fall=1, worn=1), T0 + 100)
    feeder.tick(cols(1, T0 + 3000, activity=0.5, worn=1), T0 + 3000)  # clears it
    late = cols(1, [T0 + 50, T0 + 2000], activity=0.2, fall=1, worn=[1, 0])
    assert feeder.tick(late, T0 + 3001) == []


def day_stream(start_h: float, hours: float, dt: float = 30.0, **values: Any) -> SampleColumns:
    ts = local(start_h) + dt * np.arange(int(hours * H / dt) + 1)
    return cols(0, ts, **{"worn": 1, **values})


@pytest.mark.parametrize(("start_h", "hours", "expect_onset_h"), [
    (8.0, 3.0, 8.0),
    (8.0, 3.0 - 31 / H, None),  # one sample short
    (5.0, 6.0, 7.0),  # the window starts at 07:00, never earlier
    (19.0, 4.0, None),  # would cross 21:00
    (22.0, 8.0, None),  # night
])
def test_inactivity_awake_hours(start_h: float, hours: float, expect_onset_h: float | None) -> None:
    got = opened(run_one(Inactivity(1), day_stream(start_h, hours, activity=0.01)))
    want = [] if expect_onset_h is None else [pytest.approx(local(expect_onset_h), abs=30)]
    assert [r["onset"] for r in got] == want


def test_inactivity_needs_stillness_and_wear() -> None:
    assert run_one(Inactivity(1), day_stream(8, 4, activity=0.03)) == []
    assert run_one(Inactivity(1), day_stream(8, 4, activity=0.01, worn=0)) == []


def test_inactivity_at_exactly_a_configured_stillness_threshold() -> None:
    # activity is float32: float32(0.05) > 0.05, yet a reading of 0.05 is "at or below"
    rule = Inactivity(1, Inactivity.Params(still_g=0.05))
    assert [r["severity"] for r in opened(run_one(rule, day_stream(8, 3, activity=0.05)))] == [3]
    rule = Inactivity(1, Inactivity.Params(still_g=0.05))
    assert run_one(rule, day_stream(8, 3, activity=0.06)) == []


@pytest.mark.parametrize(("start_h", "minutes", "expect"), [
    (9.0, 30, True), (9.0, 29, False), (2.0, 120, False), (20.75, 30, False)])
def test_not_worn(start_h: float, minutes: float, expect: bool) -> None:
    got = opened(run_one(NotWorn(1), day_stream(start_h, minutes / 60, dt=60, worn=0)))
    assert bool(got) == expect
    if expect:
        assert got[0]["severity"] == 2


def test_device_offline_never_heard_data_and_last_will() -> None:
    det = DeviceOffline(2)
    feeder = Feeder([det], 2, started_at=T0)
    assert feeder.tick(None, T0 + 599) == []
    got = feeder.tick(None, T0 + 600)
    assert {(r["row"], r["active"], r["onset"]) for r in got} == {(0, True, T0), (1, True, T0)}
    got = feeder.tick(cols(0, T0 + 650, hr=70, worn=1), T0 + 660)
    assert [(r["row"], r["active"]) for r in got] == [(0, False)]
    feeder.store.set_status(0, False, None, T0 + 700)  # the Last Will
    got = feeder.tick(None, T0 + 701)
    assert [(r["row"], r["active"], r["evidence"]["last_will"]) for r in got] == [(0, True, True)]
    got = feeder.tick(cols(0, T0 + 720, hr=70, worn=1), T0 + 721)
    assert [(r["row"], r["active"]) for r in got] == [(0, False)]


def test_device_offline_broker_restart_wills_wait_for_their_devices() -> None:
    """A broker restart publishes every connected device's will just before the pipeline's
    own link drops, and replays it after: such wills wait outage_grace_s (120 s) after the
    link is back. A device that returns in time raises nothing; one that doesn't is offline
    from its will."""
    feeder = Feeder([DeviceOffline(3)], 3, started_at=T0)
    feeder.tick(cols([0, 1, 2], [T0 + 10] * 3, hr=70, worn=1), T0 + 10)
    feeder.store.set_status(2, False, None, T0 + 30)  # a device that died on its own
    assert [(r["row"], r["active"]) for r in feeder.tick(None, T0 + 31)] == [(2, True)]
    for row in (0, 1):
        feeder.store.set_status(row, False, None, T0 + 100.0)  # the broker going down
    feeder.link = (T0 + 100.5, float("nan"))  # ... and our connection with it
    assert feeder.tick(None, T0 + 101) == []
    assert feeder.tick(None, T0 + 400) == []  # down 5 min: nobody is heard, nobody judged
    feeder.link = (T0 + 100.5, T0 + 410.0)
    feeder.store.set_status(0, True, None, T0 + 415)  # device 0 reconnects in time
    feeder.tick(cols(0, T0 + 416, hr=70, worn=1), T0 + 416)
    assert feeder.tick(None, T0 + 529) == []  # within the grace
    got = feeder.tick(None, T0 + 530)  # back + 120 s: device 1 never returned
    assert [(r["row"], r["active"], r["onset"], r["evidence"]["last_will"]) for r in got] == [
        (1, True, T0 + 100.0, True)]


def test_device_offline_silence_excludes_the_pipelines_own_outage() -> None:
    feeder = Feeder([DeviceOffline(2)], 2, started_at=T0)
    feeder.tick(cols([0, 1], [T0] * 2, hr=70, worn=1), T0)
    feeder.link = (T0 + 100.0, T0 + 700.0)  # 10 min without a broker
    feeder.tick(cols(1, T0 + 701, hr=70, worn=1), T0 + 701)
    assert feeder.tick(None, T0 + 1199) == []  # heard for 100 + 499 s of the 1,199
    got = feeder.tick(None, T0 + 1200)
    assert [(r["row"], r["active"], r["onset"], r["evidence"]["silent_s"]) for r in got] == [
        (0, True, T0, 600.0)]  # onset: when it was last heard


def test_low_battery_with_hysteresis() -> None:
    feeder = Feeder([LowBattery(1)], 1)
    assert feeder.tick(cols(0, T0, battery=16), T0) == []
    assert [r["active"] for r in feeder.tick(cols(0, T0 + 10, battery=15), T0 + 10)] == [True]
    assert feeder.tick(cols(0, T0 + 20, battery=19), T0 + 20) == []
    assert [r["active"] for r in feeder.tick(cols(0, T0 + 30, battery=21), T0 + 30)] == [False]


def test_low_battery_onset_is_the_ts_of_the_reading_not_the_tick() -> None:
    feeder = Feeder([LowBattery(3)], 3)
    # received and judged 40 s after the reading was taken
    got = feeder.tick(cols(0, T0 + 10, battery=15), T0 + 50)
    assert [(r["active"], r["onset"]) for r in got] == [(True, T0 + 10)]
    # a batch upload: the condition began at the first of the trailing low readings
    batch = cols([1] * 5 + [2] * 4, [T0 + 10.0 * k for k in range(5)] + [
        T0 + 10.0 * k for k in range(4)], battery=[17, 15, 14, 16, 15, 18, 15, 14, 13])
    got = feeder.tick(batch, T0 + 300)
    assert sorted((r["row"], r["onset"]) for r in got) == [(1, T0 + 40), (2, T0 + 10)]


def test_low_battery_from_a_status_message_is_dated_by_its_ts() -> None:
    feeder = Feeder([LowBattery(2)], 2)
    feeder.store.set_status(0, True, 12.0, T0 + 30, T0 + 5)  # the message's own ts
    feeder.store.set_status(1, True, 12.0, T0 + 30)  # none given: its receipt
    got = feeder.tick(None, T0 + 31)
    assert sorted((r["row"], r["onset"]) for r in got) == [(0, T0 + 5), (1, T0 + 30)]
    # a status after the samples holds the reading: its ts, not the samples' run
    feeder = Feeder([LowBattery(1)], 1)
    feeder.store.append(cols(0, [T0, T0 + 10], battery=[14, 13]), T0 + 20)
    feeder.store.set_status(0, True, 12.0, T0 + 25, T0 + 22)
    assert [r["onset"] for r in feeder.tick(None, T0 + 26)] == [T0 + 22]


def test_low_battery_judges_only_devices_whose_reading_changed() -> None:
    # an inverted hysteresis (clear_above below threshold) flaps on every judgement, so it
    # shows which devices a tick judges: device 0 keeps 25 %, device 1's reading moves
    params = LowBattery.Params(threshold=30.0, clear_above=20.0)
    feeder = Feeder([LowBattery(2, params)], 2)
    first = feeder.tick(cols([0, 1], [T0, T0], battery=[25.0, 80.0]), T0)
    assert [(r["row"], r["active"]) for r in first] == [(0, True)]
    for k, level in enumerate([70.0, 60.0, 50.0]):
        now = T0 + 10.0 * (k + 1)
        assert feeder.tick(cols([0, 1], [now, now], battery=[25.0, level]), now) == []


def test_baseline_deviation_compares_with_the_same_hour() -> None:
    rng = np.random.default_rng(0)
    day0 = local(0.0)
    ts = day0 + 60.0 * np.arange(1440)
    hour = (ts - day0) // H
    hr = np.where((hour < 6), 55.0, 75.0) + rng.normal(0, 2, len(ts))  # lower at night
    feeder = Feeder([], 1)
    feeder.tick(cols(0, ts, hr=np.round(hr), worn=1, activity=0.0), ts[-1] + 30)
    now = ts[-1] + 60
    # next day 02:00: HR 75 is normal by day, far above this resident's nights
    night = cols(0, local(26.0) + 10.0 * np.arange(70), hr=78.0, worn=1, activity=0.0)
    feeder2 = Feeder([BaselineDeviation(1)], 1)
    feeder2.store = feeder.store
    feeder2.tick(None, now)
    got = opened(feeder2.tick(night, local(26.0) + 700))
    assert [r["severity"] for r in got] == [1]
    assert got[0]["evidence"]["vital"] == "hr"
    day = cols(0, local(34.0) + 10.0 * np.arange(70), hr=78.0, worn=1, activity=0.0)
    feeder3 = Feeder([BaselineDeviation(1)], 1)
    feeder3.store = feeder.store
    feeder3.tick(None, now)
    assert opened(feeder3.tick(day, local(34.0) + 700)) == []
