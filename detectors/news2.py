"""NEWS2 aggregate (Royal College of Physicians, 2017) from the parameters a wearable measures.

Each parameter's latest accepted value no older than `max_age_s` is scored; consciousness
scores as alert and breathing as on air (0). Residents with `copd` use SpO2 scale 2.
High: aggregate >= 7; medium: 5-6 or any single parameter scoring 3; held >= 5 min.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.kernels import blend, lanes
from detectors.params import DetectorParams, ParamTable, copd_mask, n_rows
from detectors.quality import at_rest
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
# The charting reference (`news2_scores`, the per-device loop of `detectors.naive`): lookup
# tables over charted (rounded) values, index = round(x * scale) - lo, last = missing. The
# detector itself compares readings with band edges (`band_scores`), which chart the same.
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


def _charted(x: np.float32, scale: float) -> float:
    """The charted code of a float32 reading, as the lookup tables index it."""
    return float(np.rint(np.float64(x) * scale))


def _edge_threshold(code: int, scale: float) -> np.float32:
    """The largest float32 reading charted at or below `code`: a reading scores above the
    band edge exactly when it is greater than this (charting is monotonic in the reading,
    so one comparison in float32 decides what rounding in float64 would)."""
    t = np.float32((code + 0.5) / scale)
    while _charted(t, scale) > code:
        t = np.nextafter(t, np.float32(-np.inf))
    while _charted(np.nextafter(t, np.float32(np.inf)), scale) <= code:
        t = np.nextafter(t, np.float32(np.inf))
    return t


def _edges(name: str) -> tuple[list[np.float32], list[int], int]:
    """(float32 thresholds, score steps at them, score of the lowest band) for a parameter."""
    scale = _LUT_RANGE[name][1]
    edges, scores = _BANDS[name]
    thr = [_edge_threshold(round(e * scale), scale) for e in edges]
    return thr, [b - a for a, b in itertools.pairwise(scores)], scores[0]


# The 2-D scoring pass: a reading's score is its lowest band's plus a step at every band
# edge it lies above, one float32 comparison per edge on (parameters x devices), padded
# with +inf edges (never above) where a parameter has fewer bands. SpO2's row is scale 1;
# copd rows redo it on scale 2 (`News2._spo2_copd`), whose steps are the same.
_EDGES = [_edges(v) for v in PARAMS]
_K = max(len(e[0]) for e in _EDGES)
_THR = np.array([e[0] + [np.float32(np.inf)] * (_K - len(e[0])) for e in _EDGES], np.float32)
_STEP = np.array([e[1] + [0] * (_K - len(e[1])) for e in _EDGES], np.int8)
_LOWEST = np.array([[e[2]] for e in _EDGES], np.int8)
_SPO2 = PARAMS.index("spo2")
_SPO2_THR, _SPO2_STEP, _SPO2_LOWEST = _edges("spo2")
_SPO2_COPD_THR, _COPD_STEP, _COPD_LOWEST = _edges("spo2_copd")
assert (_SPO2_STEP, _SPO2_LOWEST) == (_COPD_STEP, _COPD_LOWEST) == ([-1, -1, -1], 3)
_AT_REST_ONLY = np.array([[v in ("hr", "spo2")] for v in PARAMS])


def band_scores(val: np.ndarray, spo2_thr: np.ndarray | None = None) -> np.ndarray:
    """Scores (int8, the shape of `val`) of float32 readings, (PARAMS x samples), as charted
    (NaN scores the lowest band: mask it). `spo2_thr`: per-sample SpO2 edges (3 x samples)
    where some rows use scale 2."""
    scores = np.empty(val.shape, np.int8)
    scores[...] = _LOWEST
    above = np.empty(val.shape, bool)
    step = np.empty(val.shape, np.int8)
    for k in range(_K):
        np.greater(val, _THR[:, k:k + 1], out=above)
        np.multiply(above.view(np.int8), _STEP[:, k:k + 1], out=step)
        scores += step
    if spo2_thr is not None:  # every SpO2 step is -1: 3 less one per edge exceeded
        np.subtract(3, (val[_SPO2] > spo2_thr).sum(axis=0, dtype=np.int8), out=scores[_SPO2])
    return scores


class News2:
    """NEWS2 aggregate: high >= 7, medium 5-6 or a single 3, held 5 min."""

    name: ClassVar[str] = "news2"
    kinds: ClassVar[tuple[str, ...]] = ("news2",)
    Params: ClassVar[type[News2Params]] = News2Params
    sample_driven: ClassVar[bool] = True  # replay spans: see detectors.base.Detector

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.n = n
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.copd = copd_mask(devices)
        self.fresh = Fresh(n)
        # latest accepted value and its time, one row per parameter (PARAMS order). Values
        # stay float32, the readings' own type (lossless, half the bytes to blend), and are
        # scored in float32 against edges that chart as float64 rounding would
        self.values = np.full((len(PARAMS), n), np.nan, np.float32)
        self.values_ts = np.full((len(PARAMS), n), np.nan)
        self.offsets = (np.arange(len(PARAMS), dtype=np.intp) * n)[:, None]
        # SpO2's band edges per row: scale 2 where the resident has copd
        self.any_copd = bool(self.copd.any())
        self.spo2_thr = np.where(self.copd, np.array(_SPO2_COPD_THR)[:, None],
                                 np.array(_SPO2_THR)[:, None]).astype(np.float32)
        self.episodes = Episodes("news2", n, (2, 3), "max")

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: hold these rows' conditions active (high where the alert is),
        so that they clear as usual."""
        if kind not in self.kinds or not len(rows):
            return
        high = np.asarray(severity) >= 3 if severity is not None else False
        self.episodes.resume(rows, onset, np.where(high, 3, 2).astype(np.int8))

    def update(self, state: TickState, now: float) -> list[Findings]:
        new = state.new
        m = len(new)
        if m == 0:
            return []
        out = Emitter("news2")
        p = self.params
        vm = np.array([getattr(new, v) for v in PARAMS], np.float32)
        for idx in rank_groups(new.row):
            whole = len(idx) == m
            r, t = (new.row, new.ts) if whole else (new.row[idx], new.ts[idx])
            worn, act = (new.worn, new.activity) if whole else (new.worn[idx], new.activity[idx])
            ok = self.fresh.step(r, t) & (worn != 0)
            if not ok.any():
                continue
            # score every sample of the group (dense ticks need no gathers), then hand the
            # episode step only the fresh, worn samples of rows with something going on
            x = vm if whole else vm[:, idx]
            dense = len(r) == self.n
            fi = None if dense else self.offsets + r
            val = self.values if dense else self.values.take(r, axis=1)
            val_ts = self.values_ts if dense else self.values_ts.take(r, axis=1)
            take = x == x
            take &= ok
            take &= at_rest(act, p.at("rest_g", r)) >= _AT_REST_ONLY
            blend(val_ts, t, lane=lanes(take))
            blend(val, x, lane=lanes(take, np.int32))
            if fi is not None:
                self.values.reshape(-1)[fi] = val
                self.values_ts.reshape(-1)[fi] = val_ts
            recent = (t - val_ts) <= p.at("max_age_s", r)  # NaN (never taken): False
            # scored as charted; missing or too old scores 0 (a value and its time are
            # taken together: never taken is NaN in both, and `recent` is False there)
            spo2_thr = None
            if self.any_copd:
                spo2_thr = self.spo2_thr if dense else self.spo2_thr.take(r, axis=1)
            scores = band_scores(val, spo2_thr)
            scores *= recent
            total = scores.sum(axis=0, dtype=np.int16)
            high = total >= p.at("high_score", r)
            medium = high | (total >= p.at("medium_score", r))
            three = p.at("single_three", r)
            if isinstance(three, np.ndarray):
                medium |= (scores == 3).any(axis=0) & three
            elif three:
                medium |= (scores == 3).any(axis=0)
            ep = self.episodes
            keep = np.flatnonzero(ok & (medium | (ep.busy if dense else ep.busy.take(r))))
            if len(keep) == 0:
                continue
            r, t, medium = r[keep], t[keep], medium[keep]
            cur = np.where(recent.take(keep, axis=1), val.take(keep, axis=1).astype(np.float64),
                           np.nan)
            score = total[keep].astype(np.float64)
            ev: dict[str, Any] = {"score": score}
            for i, v in enumerate(PARAMS):
                ev[v] = cur[i]
            dur = p.at("duration_s", r)
            ep.step(out, r, t, [medium, high[keep]], [dur, dur], ~medium, p.at("clear_s", r),
                    p.at("max_gap_s", r), value=score, ext_key="score_max", evidence=ev)
        return out.build()
