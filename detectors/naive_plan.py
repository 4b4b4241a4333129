"""Per-row rule parameters for the per-device loop (`detectors.naive`), as plain Python.

Built once from the same per-row parameter models the vectorised detectors get (those of
`registry.resolve_params`: deployment, town and resident overrides); rows whose models are
the same objects share one `Plan`, and the per-sample loop reads its tuples of floats.

Activity and battery readings are float32, and the vectorised rules compare them with the
rest, fall and battery thresholds in float32 (`quality.at_rest`, `quality.f32_threshold`):
those thresholds are rounded to float32 here (`f32`), so the loop's float comparisons agree.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from detectors.news2 import _BANDS, _LUT_RANGE, _LUT_SIZE, PARAMS
from detectors.registry import DETECTORS
from detectors.runs import EPS
from detectors.sustained import SustainedThreshold
from ingest.devices import DeviceTable

NAN = float("nan")
INF = float("inf")
__all__ = ["EPS", "INF", "NAN", "NEWS_TOP", "Plan", "build_plans", "f32"]

SUSTAINED = [name for name, cls in DETECTORS.items() if issubclass(cls, SustainedThreshold)]
VITAL_INDEX = {"hr": 0, "spo2": 1, "rr": 2, "temp_c": 3}  # the loop's per-sample vital tuple


def f32(x: float) -> float:
    """`x` rounded to the nearest float32 (as NumPy rounds a weak scalar)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _lut(name: str) -> list[int]:
    """NEWS2 score per charted code, as `detectors.news2` builds its table."""
    lo, scale = _LUT_RANGE[name]
    edges, scores = _BANDS[name]
    out = []
    for i in range(_LUT_SIZE - 1):
        g = (i + lo) / scale
        out.append(scores[sum(1 for e in edges if e < g)])
    return out


# (lookup table, scale, offset) per NEWS2 parameter, scale 1 and scale 2 (copd) SpO2
NEWS_LUTS = {name: (_lut(name), float(_LUT_RANGE[name][1]), _LUT_RANGE[name][0])
             for name in _BANDS}
NEWS_TOP = _LUT_SIZE - 2


def _rest(v: float | None) -> float | None:
    """A rest threshold as compared with float32 activity (None: no rest rule)."""
    return None if v is None else f32(float(v))


def _opt(v: float | None) -> float:
    return NAN if v is None else float(v)


class Plan:
    """Every rule's parameters for one row, as tuples the loop unpacks."""

    __slots__ = ("awake", "battery", "bp", "fall", "news", "offline", "rest_base", "rules",
                 "streams")

    def __init__(self, m: dict[str, Any], copd: bool) -> None:
        # sustained rules: streams share gating (vital, rest, recovery, jump, flat-line)
        streams: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        self.rules: list[str] = []
        for name in SUSTAINED:
            cls, p = DETECTORS[name], m[name]
            if copd and "copd_threshold" in cls.Params.model_fields:
                thr, crit = float(p.copd_threshold), float(p.copd_critical_threshold)
            else:
                thr, crit = float(p.threshold), _opt(p.critical_threshold)
            rest = _rest(p.rest_g)
            key = (VITAL_INDEX[cls.vital], rest, float(p.recovery_s), float(p.max_jump),
                   int(p.flat_samples))
            low = bool(cls.low)
            clear_at = thr + p.clear_margin if low else thr - p.clear_margin
            streams.setdefault(key, []).append(
                (len(self.rules), name, low, thr, crit, int(cls.severity), 4,
                 float(p.duration_s), float(p.critical_duration_s), clear_at, float(p.clear_s),
                 float(p.max_gap_s), f"{cls.vital}_{'min' if low else 'max'}"))
            self.rules.append(name)
        self.streams = [(*key, tuple(rules)) for key, rules in streams.items()]
        hp, hc = m["hypotension"], m["hypertensive_crisis"]
        self.bp = ((float(hp.readings), float(hp.max_interval_s), float(hp.sbp_max),
                    float(hp.sbp_max + hp.clear_margin)),
                   (float(hc.readings), float(hc.max_interval_s), float(hc.sbp_min),
                    float(hc.dbp_min), float(hc.sbp_min - hc.clear_margin),
                    float(hc.dbp_min - hc.clear_margin)))
        n2 = m["news2"]
        luts = [NEWS_LUTS["spo2_copd" if (v == "spo2" and copd) else v] for v in PARAMS]
        self.news = (tuple(luts), float(n2.high_score), float(n2.medium_score),
                     bool(n2.single_three), float(n2.duration_s), float(n2.max_age_s),
                     float(n2.max_gap_s), float(n2.clear_s), f32(n2.rest_g))
        b = m["baseline_deviation"]
        self.rest_base = (float(b.k), float(b.clear_k),
                          (float(b.hr_min_abs), float(b.spo2_min_abs), float(b.rr_min_abs),
                           float(b.temp_c_min_abs)),
                          float(b.duration_s), float(b.max_gap_s), float(b.clear_s),
                          f32(b.rest_g))
        f = m["fall"]
        # activity thresholds rounded to float32, as `Fall` compares them
        self.fall = (bool(f.use_flag), f32(f.impact_g), f32(f.still_g), float(f.still_s),
                     float(f.settle_s), float(f.max_gap_s), f32(f.clear_g), float(f.clear_s),
                     float(f.hold_s))
        ia, nw = m["inactivity"], m["not_worn"]
        self.awake = ((ia.awake_start_h * 3600.0, ia.awake_end_h * 3600.0, f32(ia.still_g),
                       f32(ia.clear_g), float(ia.duration_s), float(ia.max_gap_s),
                       int(DETECTORS["inactivity"].severity)),
                      (nw.awake_start_h * 3600.0, nw.awake_end_h * 3600.0,
                       float(nw.duration_s), float(nw.max_gap_s), float(nw.clear_s),
                       int(DETECTORS["not_worn"].severity)))
        off = m["device_offline"]
        self.offline = (float(off.offline_s), bool(off.use_last_will))
        lb = m["low_battery"]
        self.battery = (f32(lb.threshold), f32(lb.clear_above))


def build_plans(devices: DeviceTable, params: Mapping[str, Sequence[Any]] | None = None
                ) -> list[Plan]:
    """One plan per row (shared between rows with the same models and conditions)."""
    n = len(devices)
    params = params or {}
    tables = {name: params.get(name) or [cls.Params()] * n for name, cls in DETECTORS.items()}
    cache: dict[tuple[Any, ...], Plan] = {}
    out: list[Plan] = []
    for row in range(n):
        copd = "copd" in devices.conditions[row]
        models = {name: rows[row] for name, rows in tables.items()}
        key = (copd, *(id(m) for m in models.values()))
        plan = cache.get(key)
        if plan is None:
            plan = cache[key] = Plan(models, copd)
        out.append(plan)
    return out
