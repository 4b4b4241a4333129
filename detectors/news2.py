"""NEWS2 aggregate (Royal College of Physicians, 2017) from the parameters a wearable measures.

Each parameter's latest accepted value no older than `max_age_s` is scored; consciousness
scores as alert and breathing as on air (0). Residents with `copd` use SpO2 scale 2.
High: aggregate >= 7; medium: 5-6 or any single parameter scoring 3; held >= 5 min.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, copd_mask, n_rows
from detectors.quality import at_rest, worn_ok
from detectors.runs import Emitter, Episodes, Fresh, rank_groups
from ingest.devices import DeviceTable

PARAMS = ("rr", "spo2", "sbp", "hr", "temp_c")


def _bands(x: np.ndarray, edges: list[float], scores: list[int]) -> np.ndarray:
    """Score by band: edges are the upper inclusive bounds of all bands but the last."""
    idx = np.searchsorted(np.asarray(edges), x, side="left")
    out = np.asarray(scores, np.int8)[idx]
    return np.where(np.isnan(x), 0, out).astype(np.int8)


_BANDS: dict[str, tuple[list[float], list[int]]] = {
    "rr": ([8, 11, 20, 24], [3, 1, 0, 2, 3]),
    "spo2": ([91, 93, 95], [3, 2, 1, 0]),
    "spo2_copd": ([83, 85, 87], [3, 2, 1, 0]),  # scale 2, on air: >= 88 scores 0
    "sbp": ([90, 100, 110, 219], [3, 2, 1, 0, 3]),
    "hr": ([40, 50, 90, 110, 130], [3, 1, 0, 1, 2, 3]),
    "temp_c": ([35.0, 36.0, 38.0, 39.0], [3, 1, 0, 1, 2]),
}
# Lookup tables over charted (rounded) values: index = round(x * scale) - lo; last = missing.
_LUT_RANGE = {"rr": (0, 1), "spo2": (0, 1), "spo2_copd": (0, 1), "sbp": (0, 1), "hr": (0, 1),
              "temp_c": (250, 10)}
_LUT_SIZE = 501


def _make_lut(name: str) -> np.ndarray:
    lo, scale = _LUT_RANGE[name]
    grid = (np.arange(_LUT_SIZE - 1) + lo) / scale
    edges, scores = _BANDS[name]
    return np.r_[_bands(grid, edges, scores), 0].astype(np.int8)


_LUTS = {name: _make_lut(name) for name in _BANDS}


def _score(name: str, x: np.ndarray) -> np.ndarray:
    lo, scale = _LUT_RANGE[name]
    with np.errstate(invalid="ignore"):
        i = np.round(x * scale) - lo
    i = np.where(np.isnan(i), _LUT_SIZE - 1, np.clip(i, 0, _LUT_SIZE - 2)).astype(np.intp)
    return _LUTS[name][i]


def news2_scores(values: dict[str, np.ndarray], copd: np.ndarray) -> dict[str, np.ndarray]:
    """Per-parameter NEWS2 scores (0 where missing). Values are rounded as charted."""
    spo2 = values["spo2"]
    return {
        "rr": _score("rr", values["rr"]),
        "spo2": np.where(copd, _score("spo2_copd", spo2), _score("spo2", spo2)).astype(np.int8),
        "sbp": _score("sbp", values["sbp"]),
        "hr": _score("hr", values["hr"]),
        "temp_c": _score("temp_c", values["temp_c"]),
    }


class News2Params(DetectorParams):
    high_score: int = Field(7, ge=1)
    medium_score: int = Field(5, ge=1)
    single_three: bool = Field(True, description="any single parameter scoring 3 is medium")
    duration_s: float = Field(300.0, ge=0)
    max_age_s: float = Field(900.0, gt=0, description="latest value at most this old")
    max_gap_s: float = Field(120.0, gt=0)
    clear_s: float = Field(300.0, ge=0)
    rest_g: float = Field(0.1, gt=0, description="HR and SpO2 count at rest only")


class News2:
    """NEWS2 aggregate: high >= 7, medium 5-6 or a single 3, held 5 min."""

    name: ClassVar[str] = "news2"
    kinds: ClassVar[tuple[str, ...]] = ("news2",)
    Params: ClassVar[type[News2Params]] = News2Params

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.copd = copd_mask(devices)
        self.fresh = Fresh(n)
        self.value = {v: np.full(n, np.nan) for v in PARAMS}
        self.value_ts = {v: np.full(n, np.nan) for v in PARAMS}
        self.episodes = Episodes("news2", n, (2, 3), "max")

    def update(self, state: TickState, now: float) -> list[Findings]:
        new = state.new
        if len(new) == 0:
            return []
        out = Emitter("news2")
        p = self.params
        for idx in rank_groups(new.row):
            r, t = new.row[idx], new.ts[idx]
            ok = self.fresh.step(r, t) & worn_ok(new.worn[idx])
            if not ok.any():
                continue
            r, t, sel = r[ok], t[ok], idx[ok]
            rest = at_rest(new.activity[sel], p.at("rest_g", r))
            for v in PARAMS:
                x = getattr(new, v)[sel].astype(np.float64)
                take = ~np.isnan(x) & (rest if v in ("hr", "spo2") else True)
                self.value[v][r[take]] = x[take]
                self.value_ts[v][r[take]] = t[take]
            age = p.at("max_age_s", r)
            cur = {}
            for v in PARAMS:
                with np.errstate(invalid="ignore"):
                    fresh_v = (t - self.value_ts[v][r]) <= age
                cur[v] = np.where(fresh_v, self.value[v][r], np.nan)
            scores = news2_scores(cur, self.copd[r])
            total = sum(s.astype(np.int16) for s in scores.values())
            assert isinstance(total, np.ndarray)
            three = np.zeros(len(r), bool)
            if p.base.single_three:
                for s in scores.values():
                    three |= s == 3
            high = total >= p.at("high_score", r)
            medium = high | (total >= p.at("medium_score", r)) | three
            clear = ~medium
            ev: dict[str, Any] = {"score": total.astype(np.float64)}
            for v in PARAMS:
                ev[v] = cur[v]
            dur = p.at("duration_s", r)
            self.episodes.step(out, r, t, [medium, high], [dur, dur], clear, p.at("clear_s", r),
                               p.at("max_gap_s", r), value=total.astype(np.float64),
                               ext_key="score_max", evidence=ev)
        return out.build()
