"""Detector benchmark: one steady-state tick of every detector over N devices with one new
sample each, against a plain per-device Python loop implementing the same threshold rules.

`bench_detect()` returns figures in milliseconds; `carewatch bench detect` prints them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from detectors.base import TickState
from detectors.registry import DETECTORS, link
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore

T0 = 1_764_316_800.0 + 1800.0  # mid-hour: typical ticks, not an hourly baseline refit
# The rules the naive loop implements too (everything but the baseline refresh).
SAME_RULES = [k for k in DETECTORS if k != "baseline_deviation"]


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


def _time_ticks(n: int, ticks: int, warm: int, names: list[str], seed: int = 0
                ) -> tuple[float, list[SampleColumns], Any]:
    devices = synthetic_devices(n, seed=seed)
    store = StateStore(n, minute_capacity=1440 if n <= 20_000 else 60)
    detectors = link([DETECTORS[k](devices) for k in names])
    rng = np.random.default_rng(seed)
    batches = [tick_samples(n, T0 + 1.0 * (i + 1), rng) for i in range(warm + ticks)]
    times = []
    for i, batch in enumerate(batches):
        now = T0 + 1.0 * (i + 1)
        store.append(batch, now)
        state = TickState(new=store.take_pending(), store=store, devices=devices,
                          started_at=T0, utc_offset_s=8 * 3600.0)
        t_start = time.perf_counter()
        for d in detectors:
            d.update(state, now)
        if i >= warm:
            times.append(time.perf_counter() - t_start)
    return float(np.median(times)) * 1e3, batches, store


def bench_detect(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), quick: bool = False
                 ) -> dict[str, float]:
    """Median ms per tick of all detectors per size, plus the loop comparison at 10k (or the
    largest size below it)."""
    ticks, warm = (3, 2) if quick else (15, 5)
    out: dict[str, float] = {}
    for n in sizes:
        ms, _, _ = _time_ticks(n, ticks, warm, list(DETECTORS))
        out[f"tick_ms_{_label(n)}"] = ms
        if n == 10_000 or n == max(sizes):
            out[f"refit_tick_ms_{_label(n)}"] = _refit_ms(n)
    loop_n = max([n for n in sizes if n <= 10_000] or [min(sizes)])
    vec_ms, batches, _store = _time_ticks(loop_n, ticks, warm, SAME_RULES)
    loop = NaiveLoop(synthetic_devices(loop_n))
    times = []
    for i, batch in enumerate(batches):
        now = T0 + 1.0 * (i + 1)
        t_start = time.perf_counter()
        loop.tick(batch, now)
        if i >= warm:
            times.append(time.perf_counter() - t_start)
    loop_ms = float(np.median(times)) * 1e3
    lab = _label(loop_n)
    out[f"vector_same_rules_ms_{lab}"] = vec_ms
    out[f"loop_tick_ms_{lab}"] = loop_ms
    out[f"loop_over_vector_ratio_{lab}"] = loop_ms / vec_ms if vec_ms > 0 else float("inf")
    return out


def per_detector_us(n: int, ticks: int = 30, per_tick: int | None = None, warm: int = 3
                    ) -> dict[str, float]:
    """Median process-CPU microseconds per tick of each detector (linked as the pipeline
    links them) and of all together ("all"), over `n` devices with one new sample each, or
    `per_tick` samples on rotating rows (replay-like small ticks)."""
    devices = synthetic_devices(n)
    store = StateStore(n, minute_capacity=1440 if n <= 20_000 else 60)
    dets = dict(zip(DETECTORS, link([cls(devices) for cls in DETECTORS.values()]), strict=True))
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


# ---------------------------------------------------------------- the per-device baseline
NAN = float("nan")
# name, vital, low?, [(threshold, duration, severity)], clear margin, clear s, gap, at rest?
_SUSTAINED = [
    ("hypoxemia", "spo2", True, [(90.0, 60.0, 3), (85.0, 30.0, 4)], 2.0, 60.0, 30.0, True),
    ("bradycardia", "hr", True, [(40.0, 60.0, 3)], 5.0, 60.0, 30.0, True),
    ("tachycardia", "hr", False, [(130.0, 120.0, 3), (150.0, 60.0, 4)], 10.0, 60.0, 30.0, True),
    ("bradypnoea", "rr", True, [(8.0, 60.0, 3)], 2.0, 60.0, 30.0, False),
    ("tachypnoea", "rr", False, [(25.0, 120.0, 3)], 3.0, 60.0, 30.0, False),
    ("fever", "temp_c", False, [(38.0, 600.0, 2)], 0.3, 300.0, 900.0, False),
    ("hypothermia", "temp_c", True, [(35.0, 600.0, 2)], 0.3, 300.0, 900.0, False),
]


def _run(run: list[float], t: float, q: bool, gap: float) -> float:
    """[start, last, miss] run step; returns the run's span (or -1)."""
    start, last, miss = run
    gapped = last == last and t - last > gap
    if q:
        if start != start or gapped:
            start = t
        run[0], run[1], run[2] = start, t, 0
        return t - start
    miss += 1
    run[2] = miss
    if gapped or miss > 1:
        run[0] = NAN
    return -1.0


def _band(x: float, edges: tuple[float, ...], scores: tuple[int, ...]) -> int:
    if x != x:
        return 0
    for e, s in zip(edges, scores, strict=False):
        if x <= e:
            return s
    return scores[-1]


class NaiveLoop:
    """The same threshold rules, one device and one sample at a time in plain Python."""

    def __init__(self, devices: DeviceTable) -> None:
        self.n = len(devices)
        self.copd = [("copd" in c) for c in devices.conditions]
        self.dev: list[dict[str, Any]] = [self._fresh() for _ in range(self.n)]

    @staticmethod
    def _fresh() -> dict[str, Any]:
        d: dict[str, Any] = {"last_ts": -1e18, "last_rx": NAN, "offline": False,
                             "batt_low": False, "battery": NAN}
        for name, *_ in _SUSTAINED:
            d[name] = {"runs": [[NAN, NAN, 0], [NAN, NAN, 0]], "sev": 0, "cs": NAN}
        for name in ("hypotension", "hypertensive_crisis"):
            d[name] = {"count": 0, "last": NAN, "active": False}
        d["news2"] = {"vals": {}, "runs": [[NAN, NAN, 0], [NAN, NAN, 0]], "sev": 0, "cs": NAN}
        d["fall"] = {"impact": NAN, "active": False}
        d["inactivity"] = {"run": [NAN, NAN, 0], "active": False}
        d["not_worn"] = {"run": [NAN, NAN, 0], "active": False}
        return d

    def tick(self, batch: SampleColumns, now: float) -> list[tuple[str, int, int, bool]]:
        out: list[tuple[str, int, int, bool]] = []
        cols = {k: getattr(batch, k).tolist() for k in
                ("row", "ts", "hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity", "fall",
                 "worn", "battery")}
        for i in range(len(cols["row"])):
            row = cols["row"][i]
            d = self.dev[row]
            t = cols["ts"][i]
            d["last_rx"] = now
            b = cols["battery"][i]
            if b == b:
                d["battery"] = b
            if t <= d["last_ts"]:
                continue
            d["last_ts"] = t
            s = {k: cols[k][i] for k in cols}
            self._sample(row, d, t, s, out)
        for row in range(self.n):  # clocked rules
            d = self.dev[row]
            off = not (now - d["last_rx"] < 600.0)
            if off != d["offline"]:
                d["offline"] = off
                out.append(("device_offline", row, 2, off))
            b = d["battery"]
            if not d["batt_low"] and b <= 15.0:
                d["batt_low"] = True
                out.append(("low_battery", row, 1, True))
            elif d["batt_low"] and b > 20.0:
                d["batt_low"] = False
                out.append(("low_battery", row, 1, False))
        return out

    def _sample(self, row: int, d: dict[str, Any], t: float, s: dict[str, Any],
                out: list[tuple[str, int, int, bool]]) -> None:
        worn = s["worn"] != 0
        act = s["activity"]
        rest = not act > 0.1
        for name, vital, low, levels, margin, clear_s, gap, need_rest in _SUSTAINED:
            x = s[vital]
            if x != x or not worn or (need_rest and not rest):
                continue
            if name == "hypoxemia" and self.copd[row]:
                levels = [(84.0, 60.0, 3), (80.0, 30.0, 4)]
            st = d[name]
            cand = 0
            for j, (thr, dur, sev) in enumerate(levels):
                q = x <= thr if low else x >= thr
                if _run(st["runs"][j], t, q, gap) >= dur:
                    cand = max(cand, sev)
            if cand > st["sev"]:
                st["sev"] = cand
                out.append((name, row, cand, True))
            elif st["sev"]:
                thr = levels[0][0]
                if (x >= thr + margin) if low else (x <= thr - margin):
                    if st["cs"] != st["cs"]:
                        st["cs"] = t
                    if t - st["cs"] >= clear_s:
                        out.append((name, row, st["sev"], False))
                        st["sev"], st["cs"] = 0, NAN
                        st["runs"] = [[NAN, NAN, 0], [NAN, NAN, 0]]
                else:
                    st["cs"] = NAN
        sbp, dbp = s["sbp"], s["dbp"]
        if worn and (sbp == sbp or dbp == dbp):
            for name, q, clear in (("hypotension", sbp <= 90, sbp >= 95),
                                   ("hypertensive_crisis", sbp >= 180 or dbp >= 120,
                                    not sbp > 170 and not dbp > 110)):
                st = d[name]
                cont = t - st["last"] <= 7200
                st["count"] = (st["count"] + 1 if cont else 1) if q else 0
                st["last"] = t
                if not st["active"] and st["count"] >= 2:
                    st["active"] = True
                    out.append((name, row, 3, True))
                elif st["active"] and clear:
                    st["active"] = False
                    out.append((name, row, 3, False))
        if worn:
            self._news2(row, d["news2"], t, s, rest, out)
        self._fall_and_awake(row, d, t, s, worn, out)

    def _news2(self, row: int, st: dict[str, Any], t: float, s: dict[str, Any], rest: bool,
               out: list[tuple[str, int, int, bool]]) -> None:
        vals = st["vals"]
        for v in ("rr", "spo2", "sbp", "hr", "temp_c"):
            x = s[v]
            if x == x and (rest or v not in ("hr", "spo2")):
                vals[v] = (x, t)
        cur = {v: (vals[v][0] if v in vals and t - vals[v][1] <= 900 else NAN)
               for v in ("rr", "spo2", "sbp", "hr", "temp_c")}
        sp = ((83, 85, 87), (3, 2, 1, 0)) if self.copd[row] else ((91, 93, 95), (3, 2, 1, 0))
        parts = [_band(round(cur["rr"]) if cur["rr"] == cur["rr"] else NAN,
                       (8, 11, 20, 24), (3, 1, 0, 2, 3)),
                 _band(cur["spo2"], *sp),
                 _band(cur["sbp"], (90, 100, 110, 219), (3, 2, 1, 0, 3)),
                 _band(cur["hr"], (40, 50, 90, 110, 130), (3, 1, 0, 1, 2, 3)),
                 _band(cur["temp_c"], (35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2))]
        total = sum(parts)
        medium = total >= 5 or 3 in parts
        cand = 0
        if _run(st["runs"][0], t, medium, 120.0) >= 300:
            cand = 2
        if _run(st["runs"][1], t, total >= 7, 120.0) >= 300:
            cand = 3
        if cand > st["sev"]:
            st["sev"] = cand
            out.append(("news2", row, cand, True))
        elif st["sev"] and not medium:
            if st["cs"] != st["cs"]:
                st["cs"] = t
            if t - st["cs"] >= 300:
                out.append(("news2", row, st["sev"], False))
                st["sev"], st["cs"] = 0, NAN
        elif st["sev"]:
            st["cs"] = NAN

    def _fall_and_awake(self, row: int, d: dict[str, Any], t: float, s: dict[str, Any],
                        worn: bool, out: list[tuple[str, int, int, bool]]) -> None:
        a = s["activity"]
        f = d["fall"]
        if not f["active"] and worn and s["fall"] == 1:
            f["active"] = True
            out.append(("fall", row, 4, True))
        elif a == a and worn:
            if a >= 2.5:
                f["impact"] = t
            elif f["impact"] == f["impact"]:
                if a > 0.05 and t - f["impact"] > 10:
                    f["impact"] = NAN
                elif t - f["impact"] >= 60 and not f["active"]:
                    f["active"], f["impact"] = True, NAN
                    out.append(("fall", row, 4, True))
        sod = (t + 8 * 3600.0) % 86400.0
        awake = 7 * 3600.0 <= sod < 21 * 3600.0
        ina, nw = d["inactivity"], d["not_worn"]
        if a == a:
            q = worn and awake and a <= 0.02
            if not awake or not worn:
                ina["run"][0] = NAN
            if _run(ina["run"], t, q, 30.0) >= 3 * 3600.0 and not ina["active"]:
                ina["active"] = True
                out.append(("inactivity", row, 3, True))
            elif ina["active"] and a >= 0.1:
                ina["active"] = False
                out.append(("inactivity", row, 3, False))
        w = s["worn"]
        if w >= 0:
            if not awake:
                nw["run"][0] = NAN
            if _run(nw["run"], t, w == 0 and awake, 120.0) >= 1800.0 and not nw["active"]:
                nw["active"] = True
                out.append(("not_worn", row, 2, True))
            elif nw["active"] and w == 1:
                nw["active"] = False
                out.append(("not_worn", row, 2, False))
