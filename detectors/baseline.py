"""Baseline deviation: far outside the resident's own robust 24 h baseline for >= 10 min.

The baseline is the median and MAD of per-minute means for each local hour of day over the
store's minute ring (24 h), so the night is compared with nights. It is refreshed in
chunks of rows, each row at most every `refresh_s`, so no tick pays for every device.
Score: robust z = |x - median| / max(1.4826 MAD, floor); a sample deviates when some vital
has z >= k and differs by at least that vital's minimum absolute change.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import at_rest, worn_ok
from detectors.runs import Emitter, Episodes, Fresh, rank_groups
from ingest.devices import DeviceTable

BASE_VITALS = ("hr", "spo2", "rr", "temp_c")
MOTION_SENSITIVE = ("hr", "spo2")


class BaselineParams(DetectorParams):
    k: float = Field(4.0, gt=0, description="robust z at or above which a sample deviates")
    clear_k: float = Field(2.5, gt=0)
    hr_min_abs: float = Field(20.0, ge=0)
    spo2_min_abs: float = Field(4.0, ge=0)
    rr_min_abs: float = Field(6.0, ge=0)
    temp_c_min_abs: float = Field(1.0, ge=0)
    hr_floor: float = Field(3.0, gt=0, description="smallest scale used, units of the vital")
    spo2_floor: float = Field(1.0, gt=0)
    rr_floor: float = Field(1.5, gt=0)
    temp_c_floor: float = Field(0.15, gt=0)
    duration_s: float = Field(600.0, ge=0)
    max_gap_s: float = Field(60.0, gt=0)
    clear_s: float = Field(300.0, ge=0)
    min_minutes: int = Field(20, ge=1, description="minutes of data an hour slot needs")
    refresh_s: float = Field(300.0, gt=0)
    chunk_rows: int = Field(512, ge=1, description="rows whose baseline one tick may refresh")
    rest_g: float = Field(0.1, gt=0)


class BaselineDeviation:
    """Low-severity finding when a resident departs from their own hour-of-day baseline."""

    name: ClassVar[str] = "baseline_deviation"
    kinds: ClassVar[tuple[str, ...]] = ("baseline_deviation",)
    Params: ClassVar[type[BaselineParams]] = BaselineParams

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.n = n
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.fresh = Fresh(n)
        self.med = {v: np.full((n, 24), np.nan, np.float32) for v in BASE_VITALS}
        self.scale = {v: np.full((n, 24), np.nan, np.float32) for v in BASE_VITALS}
        self.refreshed = np.full(n, -np.inf)
        self.cursor = 0
        self.episodes = Episodes("baseline_deviation", n, (1,), "max")

    # ---------------------------------------------------------------- baseline
    def refresh(self, state: TickState, now: float, rows: np.ndarray | None = None) -> None:
        """Recompute the baseline of `rows` (default: the next due chunk)."""
        if rows is None:
            b = self.params.base
            lo = self.cursor
            hi = min(self.n, lo + b.chunk_rows)
            rows = np.arange(lo, hi)
            rows = rows[now - self.refreshed[rows] >= b.refresh_s]
            self.cursor = 0 if hi >= self.n else hi
        if len(rows) == 0:
            return
        series = state.store.minute_series(rows, now)
        hour = (np.floor(np.mod(series.minute_start + state.utc_offset_s, 86400.0) / 3600.0)
                .astype(np.int64))
        worn = series.worn != 0
        moving = series.values["activity"] > self.params.base.rest_g
        floors = {v: self.params.at(f"{v}_floor", rows) for v in BASE_VITALS}
        need = self.params.at("min_minutes", rows)
        for v in BASE_VITALS:
            x = np.where(worn, series.values[v], np.nan)
            if v in MOTION_SENSITIVE:
                x = np.where(moving, np.nan, x)
            med = np.full((len(rows), 24), np.nan, np.float32)
            scale = np.full((len(rows), 24), np.nan, np.float32)
            for h in range(24):
                cols = hour == h
                if not cols.any():
                    continue
                xh = x[:, cols]
                count = (~np.isnan(xh)).sum(axis=1)
                enough = count >= need
                if not enough.any():
                    continue
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
                    m = np.nanmedian(xh, axis=1)
                    mad = np.nanmedian(np.abs(xh - m[:, None]), axis=1)
                med[:, h] = np.where(enough, m, np.nan)
                fl = floors[v]
                scale[:, h] = np.where(enough, np.maximum(1.4826 * mad, fl), np.nan)
            self.med[v][rows] = med
            self.scale[v][rows] = scale
        self.refreshed[rows] = now

    # ---------------------------------------------------------------- update
    def update(self, state: TickState, now: float) -> list[Findings]:
        if state.store is not None:
            self.refresh(state, now)
        new = state.new
        if len(new) == 0:
            return []
        out = Emitter("baseline_deviation")
        p = self.params
        for idx in rank_groups(new.row):
            r, t = new.row[idx], new.ts[idx]
            ok = self.fresh.step(r, t) & worn_ok(new.worn[idx])
            if not ok.any():
                continue
            r, t, sel = r[ok], t[ok], idx[ok]
            h = (np.floor(np.mod(t + state.utc_offset_s, 86400.0) / 3600.0)).astype(np.int64)
            rest = at_rest(new.activity[sel], p.at("rest_g", r))
            zmax = np.full(len(r), -1.0)
            which = np.full(len(r), "", dtype=object)
            value = np.full(len(r), np.nan)
            base = np.full(len(r), np.nan)
            dev = np.zeros(len(r), bool)
            for v in BASE_VITALS:
                x = getattr(new, v)[sel].astype(np.float64)
                if v in MOTION_SENSITIVE:
                    x = np.where(rest, x, np.nan)
                m = self.med[v][r, h].astype(np.float64)
                with np.errstate(invalid="ignore"):
                    z = np.abs(x - m) / self.scale[v][r, h]
                    far = (z >= p.at("k", r)) & (np.abs(x - m) >= p.at(f"{v}_min_abs", r))
                    better = z > zmax
                zmax = np.where(better, z, zmax)
                which = np.where(better, v, which)
                value = np.where(better, x, value)
                base = np.where(better, m, base)
                dev |= far
            inc = zmax >= 0  # some vital with a baseline was measured
            if not inc.any():
                continue
            clear = zmax < p.at("clear_k", r)
            r, t = r[inc], t[inc]
            ev = {"vital": which[inc], "value": value[inc], "baseline": base[inc],
                  "z": zmax[inc]}
            self.episodes.step(out, r, t, [dev[inc]], [p.at("duration_s", r)], clear[inc],
                               p.at("clear_s", r), p.at("max_gap_s", r), value=zmax[inc],
                               ext_key="z_max", evidence=ev)
        return out.build()
