"""Property tests (hypothesis) and a conformance suite over every registered detector."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest
from detectors_harness import Feeder, config, records, table
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.loader import ConfigError, parse_config
from detectors.base import SEVERITY_NAMES, Findings, TickState, evidence_at
from detectors.messages import message
from detectors.registry import DETECTORS, build_detectors
from ingest.samples import VITALS, SampleColumns
from ingest.state import StateStore

T0 = 1_764_316_800.0
N = 4
COPD = (1,)
# Rules clocked by `now` or refreshed on a schedule: excluded from batch-split invariance.
CLOCKED = {"device_offline", "low_battery", "baseline_deviation"}
PHYSIOLOGICAL = {"hypoxemia", "bradycardia", "tachycardia", "bradypnoea", "tachypnoea", "fever",
                 "hypothermia", "hypotension", "hypertensive_crisis", "news2",
                 "baseline_deviation"}

# Values near every rule's thresholds, so the properties exercise firing paths.
LEVELS = {"hr": [38.0, 45.0, 75.0, 132.0, 152.0], "spo2": [79.0, 84.0, 88.0, 97.0],
          "rr": [7.0, 15.0, 26.0], "temp_c": [34.8, 36.8, 38.2], "sbp": [85.0, 120.0, 185.0],
          "dbp": [70.0, 125.0], "activity": [0.0, 0.01, 0.3, 3.0]}


@st.composite
def streams(draw: Any, max_len: int = 60) -> SampleColumns:
    """A few devices' sample streams with runs of near-threshold values and gaps."""
    parts = []
    for row in range(N):
        n = draw(st.integers(0, max_len))
        if n == 0:
            continue
        steps = np.array(draw(st.lists(st.sampled_from([5.0, 10.0, 10.0, 10.0, 40.0]),
                                       min_size=n, max_size=n)))
        ts = T0 + np.cumsum(steps)
        c = SampleColumns.empty(n)
        c.row[:] = row
        c.ts[:] = ts
        for v in VITALS:
            level = draw(st.sampled_from([*LEVELS[v], np.nan]))
            x = np.full(n, level, np.float32)
            flip = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
            x[flip] = draw(st.sampled_from([*LEVELS[v], np.nan]))
            getattr(c, v)[:] = x
        c.worn[:] = draw(st.sampled_from([1, 1, -1, 0]))
        c.fall[:] = -1
        if draw(st.booleans()):
            c.fall[draw(st.integers(0, n - 1))] = 1
        parts.append(c)
    return SampleColumns.concat(parts).sorted_by_row_ts()


def fresh_detectors(names: set[str] | None = None, permute: np.ndarray | None = None) -> list[Any]:
    devices = table(N, copd=COPD)
    if permute is not None:  # row i of the new table is row permute[i] of the old one
        copd = tuple(int(i) for i in np.flatnonzero(np.isin(permute, COPD)))
        devices = table(N, copd=copd)
    return [cls(devices) for name, cls in DETECTORS.items() if names is None or name in names]


def run(detectors: list[Any], batches: list[SampleColumns], now: float) -> list[dict[str, Any]]:
    feeder = Feeder(detectors, N, started_at=T0)
    out: list[dict[str, Any]] = []
    for b in batches:
        out += feeder.tick(b, now)
    return out


def key(recs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["kind"], r["row"], r["severity"], r["active"], r["onset"],
                   json.dumps(r["evidence"], sort_keys=True)) for r in recs)


SAMPLE_DRIVEN = set(DETECTORS) - CLOCKED


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.floats(0.0, 1.0), max_size=4))
def test_splitting_a_batch_never_changes_findings(stream: SampleColumns, cuts: list[float]
                                                   ) -> None:
    now = T0 + 10_000
    whole = run(fresh_detectors(SAMPLE_DRIVEN), [stream], now)
    # split by time, so each part is a later tick's new samples
    if len(stream):
        edges = sorted(T0 + c * (stream.ts.max() - T0) for c in cuts)
        bounds = [-np.inf, *edges, np.inf]
        parts = [stream.take((stream.ts > lo) & (stream.ts <= hi))
                 for lo, hi in itertools.pairwise(bounds)]
    else:
        parts = [stream]
    split = run(fresh_detectors(SAMPLE_DRIVEN), parts, now)
    assert key(split) == key(whole)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.floats(1.0, 1e6))
def test_sample_driven_findings_never_depend_on_the_clock(stream: SampleColumns,
                                                         later: float) -> None:
    """What replay's spans rely on (`sample_driven`): judging at another time, or the same
    samples over fewer ticks, finds the same (every finding on a row with a sample)."""
    at = run(fresh_detectors(SAMPLE_DRIVEN), [stream], T0 + 10_000)
    assert key(run(fresh_detectors(SAMPLE_DRIVEN), [stream], T0 + 10_000 + later)) == key(at)
    assert {r["row"] for r in at} <= set(stream.row.tolist())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.permutations(list(range(N))))
def test_shuffling_device_rows_never_changes_findings(stream: SampleColumns,
                                                      perm: list[int]) -> None:
    permute = np.array(perm)  # new row i holds old row permute[i]
    inverse = np.argsort(permute)
    now = T0 + 10_000
    base = run(fresh_detectors(), [stream], now)
    moved = stream.take(np.arange(len(stream)))
    moved.row[:] = inverse[stream.row]
    shuffled = run(fresh_detectors(permute=permute), [moved.sorted_by_row_ts()], now)
    for r in shuffled:
        r["row"] = int(permute[r["row"]])
    assert key(shuffled) == key(base)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_len=30))
def test_nan_only_input_never_fires_a_physiological_rule(stream: SampleColumns) -> None:
    for v in VITALS:
        getattr(stream, v)[:] = np.nan
    got = run(fresh_detectors(), [stream], T0 + 10_000)
    assert not [r for r in got if r["kind"] in PHYSIOLOGICAL]


finite32 = st.one_of(st.floats(-1e6, 1e6, width=32), st.just(float("nan")))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_detectors_never_raise_on_any_finite_or_nan_input(data: Any) -> None:
    n = data.draw(st.integers(1, 25))
    c = SampleColumns.empty(n)
    c.row[:] = data.draw(st.lists(st.integers(0, N - 1), min_size=n, max_size=n))
    c.ts[:] = data.draw(st.lists(st.floats(0, 2e9), min_size=n, max_size=n))
    for v in (*VITALS, "battery"):
        getattr(c, v)[:] = data.draw(st.lists(finite32, min_size=n, max_size=n))
    c.worn[:] = data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n))
    c.fall[:] = data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n))
    got = run(fresh_detectors(), [c.sorted_by_row_ts(), SampleColumns.empty()],
              data.draw(st.floats(0, 2e9)))
    for r in got:
        json.dumps(r["evidence"])


# ---------------------------------------------------------------- conformance
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_conformance(name: str) -> None:
    cls = DETECTORS[name]
    assert cls.name == name and cls.kinds and all(isinstance(k, str) for k in cls.kinds)
    # config round-trip: the model's defaults validate back to themselves
    params = cls.Params()
    assert cls.Params.model_validate(params.model_dump()) == params
    det = cls(table(N, copd=COPD), [params] * N)
    store = StateStore(N)
    empty = TickState(new=SampleColumns.empty(), store=store, devices=table(N), started_at=T0)
    assert isinstance(det.update(empty, T0), list)
    rng = np.random.default_rng(7)
    n = 400
    c = SampleColumns.empty(n)
    c.row[:] = rng.integers(0, N, n)
    c.ts[:] = T0 + np.sort(rng.uniform(0, 4000, n))
    for v in VITALS:
        x = rng.choice(LEVELS[v], n).astype(np.float32)
        x[rng.random(n) < 0.1] = np.nan
        getattr(c, v)[:] = x
    c.worn[:] = rng.choice([1, 1, 1, 0, -1], n)
    c.fall[:] = rng.choice([-1, 0, 1], n, p=[0.8, 0.18, 0.02])
    c.battery[:] = rng.choice([10.0, 50.0, np.nan], n)
    c = c.sorted_by_row_ts()
    store.append(c, T0 + 4000)
    found: list[Findings] = []
    for now in (T0 + 4000, T0 + 9000):
        state = TickState(new=store.take_pending(), store=store, devices=table(N), started_at=T0)
        found += det.update(state, now)
    for f in found:
        assert f.kind in cls.kinds
        assert f.row.dtype == np.int32 and f.severity.dtype == np.int8
        assert f.active.dtype == bool and f.onset_ts.dtype == np.float64
        assert ((f.row >= 0) & (f.row < N)).all()
        assert set(np.unique(f.severity)) <= set(SEVERITY_NAMES)
        for values in f.evidence.values():
            assert len(values) == len(f)
        for i in range(len(f)):
            ev = evidence_at(f, i)
            json.dumps(ev)
            text = message(f.kind, SEVERITY_NAMES[int(f.severity[i])], ev)
            assert isinstance(text, str) and text
    assert records(found) is not None
    # replay spans (carewatch.span): sample-driven, or clock-driven and able to say how long
    # it stays quiet; the clock-driven ones are the rules the batch-split property skips
    assert getattr(cls, "sample_driven", False) is (name not in CLOCKED - {"baseline_deviation"})
    assert hasattr(cls, "quiet_until") is (name in CLOCKED)


def test_registry_overrides_resolve_per_row_and_bad_ones_are_named() -> None:
    data = config(4, thresholds={"hypoxemia": {"threshold": 91}}).model_dump()
    data["towns"][0]["thresholds"] = {"tachycardia": {"threshold": 125}}
    data["residents"][2]["thresholds"] = {"hypoxemia": {"threshold": 88, "duration_s": 90}}
    cfg = parse_config(data)
    dets = {d.name: d for d in build_detectors(cfg)}
    thr = dets["hypoxemia"].thr
    assert thr[2] == 88 and (np.delete(thr, 2) == 91).all()
    tach = dets["tachycardia"].thr
    in_town0 = np.array([r.town == cfg.towns[0].id for r in cfg.residents])
    assert (tach[in_town0] == 125).all() and (tach[~in_town0] == 130).all()
    assert len(dets) == len(DETECTORS)
    data["residents"][1]["thresholds"] = {"fever": {"threshold": "hot"}}
    data["thresholds"] = {"hypoxemia": {"treshold": 91}, "nosuch": {}}
    with pytest.raises(ConfigError) as err:
        build_detectors(parse_config(data, "reg.yaml"))
    assert err.value.source == "reg.yaml"  # the file, as every config error names it
    assert any("thresholds.nosuch" in p for p in err.value.problems)
    data["thresholds"] = {"hypoxemia": {"treshold": 91}}
    with pytest.raises(ConfigError) as err:
        build_detectors(parse_config(data))
    text = "\n".join(err.value.problems)
    assert "thresholds.hypoxemia.treshold" in text
    assert "residents[1].thresholds.fever.threshold" in text
    # values that would silence a rule without a word: NaN or infinite thresholds, negative
    # durations (subclasses redeclare them), a critical level on the wrong side
    for override, where, expected in [
            ({"hypoxemia": {"threshold": float("nan")}}, "hypoxemia.threshold", "finite"),
            ({"fall": {"impact_g": float("inf")}}, "fall.impact_g", "finite"),
            ({"hypoxemia": {"duration_s": -5}}, "hypoxemia.duration_s", "greater than or equal"),
            ({"tachycardia": {"critical_duration_s": -1}}, "tachycardia.critical_duration_s",
             "greater than or equal"),
            ({"hypoxemia": {"threshold": 85, "critical_threshold": 90}},
             "hypoxemia.critical_threshold", "at or below threshold (85)"),
            ({"tachycardia": {"critical_threshold": 120}}, "tachycardia.critical_threshold",
             "at or above threshold (130)")]:
        data["thresholds"] = override
        data["residents"][1]["thresholds"] = {}
        with pytest.raises(ConfigError) as err:
            build_detectors(parse_config(data, "reg.yaml"))
        text = "\n".join(err.value.problems)
        assert where in text and expected in text, text


# ---------------------------------------------------------------- shortcuts = full formulas
_DAY = 1_764_288_000.0  # a UTC midnight


@given(st.floats(-2 * 86400.0, 2 * 86400.0), st.lists(st.floats(0.0, 7200.0), min_size=1,
       max_size=20), st.sampled_from([0.0, 8 * 3600.0, -5 * 3600.0]),
       st.floats(0.0, 24.0), st.floats(0.0, 24.0))
def test_awake_window_shortcut_equals_the_formula(first: float, spans: list[float],
                                                  offset: float, start_h: float,
                                                  end_h: float) -> None:
    """`awake` answers a tick with one value when it can; that value is the per-sample
    formula's, at every boundary (local midnight, the window's ends)."""
    from detectors.activity import awake

    ts = _DAY + first + np.asarray(spans)
    sod = np.mod(ts + offset, 86400.0)
    expected = (sod >= start_h * 3600.0) & (sod < end_h * 3600.0)
    assert (awake(ts, offset, start_h, end_h) == expected).all()
    # samples exactly at the window's ends
    edge = _DAY + np.array([start_h, end_h]) * 3600.0 - offset
    sod = np.mod(edge + offset, 86400.0)
    assert (awake(edge, offset, start_h, end_h)
            == ((sod >= start_h * 3600.0) & (sod < end_h * 3600.0))).all()


@given(st.floats(0.0, 86400.0), st.lists(st.floats(0.0, 90000.0), min_size=1, max_size=12),
       st.sampled_from([0.0, 8 * 3600.0]))
@example(23 * 3600.0 + 600.0, [0.0, 4800.0, 86100.0], 0.0)  # 23:10, 00:30, 23:05 next day
def test_baseline_slot_lookup_equals_the_gather(first: float, spans: list[float],
                                                offset: float) -> None:
    """The one-hour shortcut of the baseline's slot lookup reads the slots a per-sample
    (row, local hour) gather reads."""
    from detectors.baseline import BASE_VITALS, BaselineDeviation

    n = 16
    det = BaselineDeviation(n)
    det.med_all[:] = np.arange(det.med_all.size, dtype=np.float32).reshape(det.med_all.shape)
    det.scale_all[:] = det.med_all + 0.5
    t = _DAY + first + np.sort(np.asarray(spans))
    rng = np.random.default_rng(len(spans))
    for r in (np.sort(rng.choice(n, size=min(len(t), n), replace=False)), np.arange(n)):
        tt = np.resize(t, len(r))
        med, scale = det._slots(r, tt, offset)
        h = np.floor(np.mod(tt + offset, 86400.0) / 3600.0).astype(np.intp)
        for i, v in enumerate(BASE_VITALS):
            assert (med[i] == det.med[v][r, h]).all()
            assert (scale[i] == det.scale[v][r, h]).all()
