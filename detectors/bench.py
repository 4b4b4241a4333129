"""Detector benchmark: one steady-state tick of every detector over N devices with one new
sample each, against `detectors.naive.NaiveLoop`: every registered detector's rules as a
per-device plain-Python loop (quality gating, per-row parameters, hysteresis, gaps, NEWS2,
baseline scoring, falls, awake-hours rules, offline with Last Will, battery), which
`tests/test_detectors_naive.py` checks finds exactly what the vectorised detectors find.

Steady state means a fitted baseline (`fit_baseline`: a running deployment has one after
its first day), so baseline deviation scores every sample on both sides, and mid-hour
ticks (the hourly refit has its own figure). `bench_detect()` returns figures in
milliseconds; `carewatch bench detect` prints them.
"""

from __future__ import annotations

import time

import numpy as np

from detectors.base import Detector, TickState
from detectors.baseline import BaselineDeviation
from detectors.naive import NaiveLoop
from detectors.registry import DETECTORS, link
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore

T0 = 1_764_316_800.0 + 1800.0  # mid-hour: typical ticks, not an hourly baseline refit
# tick_samples' vitals: (mean, sd), the baseline a resident would have from them
USUAL = {"hr": (75.0, 12.0), "spo2": (96.0, 2.5), "rr": (16.0, 3.0), "temp_c": (36.8, 0.5)}


def synthetic_devices(n: int, copd_rate: float = 0.12, seed: int = 0) -> DeviceTable:
    """A device table without building a registry (demo_registry is slow at 100k)."""
    rng = np.random.default_rng(seed)
    ids = tuple(f"dev-{i:06d}" for i in range(n))
    res = tuple(f"r-{i:06d}" for i in range(n))
    copd = rng.random(n) < copd_rate
    return DeviceTable(device_ids=ids, resident_ids=res, town_ids=("t",) * n,
                       row_of_device={d: i for i, d in enumerate(ids)},
                       row_of_resident={r: i for i, r in enumerate(res)}, towns=("t",),
                       town_index=np.zeros(n, np.int16),
                       conditions=tuple(frozenset({"copd"}) if c else frozenset() for c in copd))


def tick_samples(n: int, t: float, rng: np.random.Generator) -> SampleColumns:
    """One plausible sample per device at time t (a few percent abnormal)."""
    c = SampleColumns.empty(n)
    c.row[:] = np.arange(n)
    c.ts[:] = t + rng.uniform(-0.5, 0.0, n)
    c.hr[:] = np.round(rng.normal(75, 12, n))
    c.spo2[:] = np.clip(np.round(rng.normal(96, 2.5, n)), 70, 100)
    c.rr[:] = np.round(rng.normal(16, 3, n))
    c.temp_c[:] = np.where(rng.random(n) < 0.1, np.round(rng.normal(36.8, 0.5, n), 1), np.nan)
    bp = rng.random(n) < 0.02
    c.sbp[:] = np.where(bp, np.round(rng.normal(130, 25, n)), np.nan)
    c.dbp[:] = np.where(bp, np.round(rng.normal(80, 15, n)), np.nan)
    c.activity[:] = np.abs(rng.normal(0.05, 0.1, n)).astype(np.float32)
    c.worn[:] = (rng.random(n) > 0.02).astype(np.int8)
    c.fall[:] = 0
    c.battery[:] = np.round(rng.uniform(5, 100, n))
    return c


def fit_baseline(detectors: list[Detector]) -> None:
    """Give the baseline detector among `detectors` a fitted slot for every row and hour
    (median and scale of `tick_samples`' distributions), as after a day of data."""
    for d in detectors:
        if isinstance(d, BaselineDeviation):
            for v, (med, scale) in USUAL.items():
                d.med[v][:] = med
                d.scale[v][:] = scale
            d.fitted = True


def _vector_side(n: int, seed: int = 0) -> tuple[StateStore, DeviceTable, list[Detector]]:
    devices = synthetic_devices(n, seed=seed)
    store = StateStore(n, minute_capacity=1440 if n <= 20_000 else 60)
    detectors = link([cls(devices) for cls in DETECTORS.values()])
    fit_baseline(detectors)
    return store, devices, detectors


def _vector_tick(store: StateStore, devices: DeviceTable, detectors: list[Detector],
                 batch: SampleColumns, now: float) -> float:
    """Append `batch` (untimed), then one timed tick of every detector: seconds."""
    store.append(batch, now)
    state = TickState(new=store.take_pending(), store=store, devices=devices,
                      started_at=T0, utc_offset_s=8 * 3600.0)
    t_start = time.perf_counter()
    for d in detectors:
        d.update(state, now)
    return time.perf_counter() - t_start


def _time_ticks(n: int, ticks: int, warm: int, seed: int = 0) -> float:
    """Median ms of one tick of all detectors over n devices."""
    store, devices, detectors = _vector_side(n, seed)
    rng = np.random.default_rng(seed)
    times = []
    for i in range(warm + ticks):
        now = T0 + 1.0 * (i + 1)
        dt = _vector_tick(store, devices, detectors, tick_samples(n, now, rng), now)
        if i >= warm:
            times.append(dt)
    return float(np.median(times)) * 1e3


def _paired_ticks(n: int, ticks: int, warm: int, seed: int = 0) -> tuple[float, float]:
    """Median ms per tick of the vectorised detectors and of the loop, on the same batches,
    tick by tick in turn: both sides meet the same machine (on a shared machine, timing
    one side's 0.1 s after the other's 4 s compared two different moments)."""
    store, devices, detectors = _vector_side(n, seed)
    baseline = next(d for d in detectors if isinstance(d, BaselineDeviation))
    loop = NaiveLoop(synthetic_devices(n, seed=seed), started_at=T0, baseline=baseline)
    rng = np.random.default_rng(seed)
    vec, naive = [], []
    for i in range(warm + ticks):
        now = T0 + 1.0 * (i + 1)
        batch = tick_samples(n, now, rng)
        dt = _vector_tick(store, devices, detectors, batch, now)
        loop.receive(batch, now)
        t_start = time.perf_counter()
        loop.tick(now, 8 * 3600.0)
        if i >= warm:
            vec.append(dt)
            naive.append(time.perf_counter() - t_start)
    return float(np.median(vec)) * 1e3, float(np.median(naive)) * 1e3


def bench_detect(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), quick: bool = False
                 ) -> dict[str, float]:
    """Median ms per tick of all detectors per size, plus the loop comparison at 10k (or the
    largest size below it): `vector_same_rules_ms` and `loop_tick_ms` both run every
    registered detector on the same ticks, in turn (`_paired_ticks`), the loop's `receive`
    (the store's append on the vector side) untimed."""
    ticks, warm = (3, 2) if quick else (15, 5)
    out: dict[str, float] = {}
    for n in sizes:
        out[f"tick_ms_{_label(n)}"] = _time_ticks(n, ticks, warm)
        if n == 10_000 or n == max(sizes):
            out[f"refit_tick_ms_{_label(n)}"] = _refit_ms(n)
    loop_n = max([n for n in sizes if n <= 10_000] or [min(sizes)])
    vec_ms, loop_ms = _paired_ticks(loop_n, ticks, warm)
    lab = _label(loop_n)
    out[f"vector_same_rules_ms_{lab}"] = vec_ms
    out[f"loop_tick_ms_{lab}"] = loop_ms
    out[f"loop_over_vector_ratio_{lab}"] = loop_ms / vec_ms if vec_ms > 0 else float("inf")
    return out


def per_detector_us(n: int, ticks: int = 30, per_tick: int | None = None, warm: int = 3
                    ) -> dict[str, float]:
    """Median process-CPU microseconds per tick of each detector (linked as the pipeline
    links them, baseline fitted) and of all together ("all"), over `n` devices with one new
    sample each, or `per_tick` samples on rotating rows (replay-like small ticks)."""
    devices = synthetic_devices(n)
    store = StateStore(n, minute_capacity=1440 if n <= 20_000 else 60)
    dets = dict(zip(DETECTORS, link([cls(devices) for cls in DETECTORS.values()]), strict=True))
    fit_baseline(list(dets.values()))
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {name: [] for name in [*dets, "all"]}
    for i in range(warm + ticks):
        now = T0 + 1.0 * (i + 1)
        batch = tick_samples(n, now, rng)
        if per_tick is not None:
            batch = batch.take(np.sort((np.arange(per_tick) + i * per_tick) % n))
        store.append(batch, now)
        state = TickState(new=store.take_pending(), store=store, devices=devices,
                          started_at=T0, utc_offset_s=8 * 3600.0)
        start = time.process_time()
        for name, det in dets.items():
            t0 = time.process_time()
            det.update(state, now)
            if i >= warm:
                times[name].append(time.process_time() - t0)
        if i >= warm:
            times["all"].append(time.process_time() - start)
    return {name: float(np.median(v)) * 1e6 for name, v in times.items()}


def _refit_ms(n: int) -> float:
    """A tick right after a local hour completes: includes one chunk of baseline refit."""
    devices = synthetic_devices(n)
    store = StateStore(n, minute_capacity=1440 if n <= 20_000 else 60)
    det = DETECTORS["baseline_deviation"](devices)
    rng = np.random.default_rng(1)
    times = []
    for i, now in enumerate((T0, T0 + 1800.0, T0 + 1801.0, T0 + 1802.0)):
        store.append(tick_samples(n, now, rng), now)
        state = TickState(new=store.take_pending(), store=store, devices=devices,
                          started_at=T0, utc_offset_s=8 * 3600.0)
        t_start = time.perf_counter()
        det.update(state, now)
        if i >= 1:
            times.append(time.perf_counter() - t_start)
    return float(np.median(times)) * 1e3


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
