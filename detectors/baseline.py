"""Baseline deviation: far outside the resident's own robust 24 h baseline for >= 10 min.

The baseline is the median and MAD of per-minute means for each local hour of day (the
latest occurrence of that hour: the store's 24 h minute ring), so the night is compared
with nights. A slot is refitted when its hour completes, in chunks of rows, so no tick
pays for every device; an hour without enough data keeps the slot's previous fit.
Score: robust z = |x - median| / max(1.4826 MAD, floor); a sample deviates when some vital
has z >= k and differs by at least that vital's minimum absolute change.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import at_rest, worn_ok
from detectors.runs import Emitter, Episodes, Fresh, rank_groups
from ingest.devices import DeviceTable
from ingest.state import MinuteSeries

BASE_VITALS = ("hr", "spo2", "rr", "temp_c")
MOTION_SENSITIVE = ("hr", "spo2")


def robust(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise median, MAD and count of non-NaN values of a 2-D array (by sorting)."""
    count = (~np.isnan(x)).sum(axis=1)
    med = _middle(np.sort(x, axis=1), count)
    mad = _middle(np.sort(np.abs(x - med[:, None]), axis=1), count)
    return med, mad, count


def _middle(xs: np.ndarray, count: np.ndarray) -> np.ndarray:
    lo = np.clip((count - 1) // 2, 0, None)[:, None]
    hi = np.clip(count // 2, 0, xs.shape[1] - 1)[:, None]
    mid = (np.take_along_axis(xs, lo, 1) + np.take_along_axis(xs, hi, 1))[:, 0] / 2
    return np.where(count > 0, mid, np.nan)


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
    chunk_rows: int = Field(256, ge=24, description="rows whose hour slot one tick may refit")
    boot_samples: int = Field(120, ge=1, description="samples a row needs to fit at start")
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
        self.last_hour: int | None = None
        self.pending_hour: int | None = None
        self.cursor = 0
        self.boot = np.zeros(0, np.int64)
        self.episodes = Episodes("baseline_deviation", n, (1,), "max")

    # ---------------------------------------------------------------- baseline
    def refresh(self, state: TickState, now: float) -> None:
        """Bounded baseline work for one tick.

        When a local hour completes, its slot is recomputed from that hour's minutes for every
        row, `chunk_rows` rows per tick. On the first tick, rows that already have data are
        bootstrapped from the whole minute ring (fewer rows per tick: 24x the minutes).
        """
        hour = int(np.floor((now + state.utc_offset_s) / 3600.0))
        chunk = self.params.base.chunk_rows
        if self.last_hour is None:
            self.last_hour = hour
            # a store restored with history: fit from it (a fresh store has nothing to fit)
            self.boot = np.flatnonzero(state.store.samples_total >= self.params.base.boot_samples)
        elif hour > self.last_hour:
            self.pending_hour, self.cursor, self.last_hour = hour - 1, 0, hour
        if self.pending_hour is not None:
            rows = np.arange(self.cursor, min(self.n, self.cursor + chunk))
            self.cursor += chunk
            end = (self.pending_hour + 1) * 3600.0 - state.utc_offset_s
            series = state.store.minute_series(rows, end - 1.0, minutes=60)
            self._fit(rows, series, np.full(60, self.pending_hour % 24))
            if self.cursor >= self.n:
                self.pending_hour = None
        elif len(self.boot):
            rows, self.boot = self.boot[: max(1, chunk // 24)], self.boot[max(1, chunk // 24):]
            series = state.store.minute_series(rows, now)
            hours = np.floor(np.mod(series.minute_start + state.utc_offset_s, 86400.0) / 3600.0)
            self._fit(rows, series, hours.astype(np.int64))

    def _fit(self, rows: np.ndarray, series: MinuteSeries, hours: np.ndarray) -> None:
        """Median and scaled MAD per (row, hour slot) for the hours present in `series`."""
        p = self.params
        worn = series.worn != 0
        with np.errstate(invalid="ignore"):
            moving = series.values["activity"] > p.base.rest_g
        need = p.at("min_minutes", rows)
        for v in BASE_VITALS:
            x = np.where(worn, series.values[v], np.nan)
            if v in MOTION_SENSITIVE:
                x = np.where(moving, np.nan, x)
            floor = p.at(f"{v}_floor", rows)
            for h in np.unique(hours):
                med, mad, count = robust(x[:, hours == h])
                ok = count >= need
                if not ok.any():
                    continue
                self.med[v][rows[ok], h] = med[ok]
                self.scale[v][rows[ok], h] = np.maximum(1.4826 * mad, floor)[ok]

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
