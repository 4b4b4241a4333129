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
from detectors.kernels import blend, lanes
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import at_rest
from detectors.runs import Emitter, Episodes, Fresh, rank_groups
from ingest.devices import DeviceTable
from ingest.minutes import MinuteSeries
from ingest.samples import SampleColumns

BASE_VITALS = ("hr", "spo2", "rr", "temp_c")
MOTION_SENSITIVE = ("hr", "spo2")
_SENSITIVE_ROWS = [i for i, v in enumerate(BASE_VITALS) if v in MOTION_SENSITIVE]
_NAMES = np.array(BASE_VITALS, dtype=object)
_NAN = np.array(np.nan)


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
    # replay spans (detectors.base.Detector): scores are sample-driven, the refit is gated
    # by quiet_until
    sample_driven: ClassVar[bool] = True

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.n = n
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.fresh = Fresh(n)
        # (vital, local hour, row): a tick's samples mostly share one hour, whose slots are
        # then one contiguous row each; `med` and `scale` are per-vital (row, hour) views
        self.med_all = np.full((len(BASE_VITALS), 24, n), np.nan, np.float32)
        self.scale_all = np.full((len(BASE_VITALS), 24, n), np.nan, np.float32)
        self.med = {v: self.med_all[i].T for i, v in enumerate(BASE_VITALS)}
        self.scale = {v: self.scale_all[i].T for i, v in enumerate(BASE_VITALS)}
        self.fitted = False  # any slot fitted yet
        self.last_hour: int | None = None
        self.pending_hour: int | None = None
        self.cursor = 0
        self.boot = np.zeros(0, np.int64)
        # refits so far and the rows of the latest: a reader of the table (the per-device
        # loop of `detectors.naive`) copies only what changed
        self.fits = 0
        self.fit_rows = np.zeros(0, np.int64)
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

    def quiet_until(self, state: TickState, new: SampleColumns) -> float:
        """Scoring is sample-driven; the refit is not: spans end before the next local hour
        (when the last one's slots are refit) and never hold a refit or bootstrap tick."""
        if self.last_hour is None or self.pending_hour is not None or len(self.boot):
            return -np.inf
        return (self.last_hour + 1) * 3600.0 - state.utc_offset_s - 1e-3

    def _fit(self, rows: np.ndarray, series: MinuteSeries, hours: np.ndarray) -> None:
        """Median and scaled MAD per (row, hour slot) for the hours present in `series`."""
        p = self.params
        worn = series.worn != 0
        rest = p.at("rest_g", rows)  # each row's own, as scoring uses it
        with np.errstate(invalid="ignore"):
            moving = series.values["activity"] > (
                rest.astype(np.float32)[:, None] if isinstance(rest, np.ndarray) else rest)
        need = p.at("min_minutes", rows)
        self.fits += 1
        self.fit_rows = rows
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
                self.fitted = True
                self.scale[v][rows[ok], h] = np.maximum(1.4826 * mad, floor)[ok]

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: hold these rows' conditions active, so that they clear as usual."""
        if kind in self.kinds and len(rows):
            self.episodes.resume(rows, onset, 1)

    # ---------------------------------------------------------------- update
    def update(self, state: TickState, now: float) -> list[Findings]:
        if state.store is not None:
            self.refresh(state, now)
        new = state.new
        m = len(new)
        if m == 0:
            return []
        out = Emitter("baseline_deviation")
        p = self.params
        vm: np.ndarray | None = None
        for idx in rank_groups(new.row):
            whole = len(idx) == m
            r, t = (new.row, new.ts) if whole else (new.row[idx], new.ts[idx])
            ok = self.fresh.step(r, t)
            ok &= (new.worn if whole else new.worn[idx]) != 0
            if not self.fitted or not ok.any():
                continue  # no baseline anywhere yet: nothing can deviate (freshness kept)
            # score every sample of the group (no gathers on dense ticks); the episode step
            # gets only fresh, worn samples of rows with something going on
            if vm is None:
                vm = np.array([getattr(new, v) for v in BASE_VITALS], np.float64)
            x = vm if whole else vm[:, idx]  # vm is this tick's own: masked in place
            moving = ~at_rest(new.activity if whole else new.activity[idx], p.at("rest_g", r))
            if moving.any():
                lane = lanes(moving)
                for i in _SENSITIVE_ROWS:
                    blend(x[i], _NAN, lane=lane)
            med, scale = self._slots(r, t, state.utc_offset_s)
            diff = np.abs(x - med)
            z = np.divide(diff, scale, out=np.empty_like(diff))
            zmax = np.fmax.reduce(z, axis=0)  # NaN: no vital with a baseline was measured
            dev = ((z >= p.at("k", r)) & (diff >= self._min_abs(r))).any(axis=0)
            ep = self.episodes
            whole_rows = len(r) == self.n
            busy = ep.busy if whole_rows else ep.busy.take(r)
            keep = np.flatnonzero(ok & (zmax >= 0) & (dev | busy))
            if len(keep) == 0:
                continue
            # the vital with the largest z (the first on ties); a missing z never wins
            zk = z[:, keep]
            np.putmask(zk, zk != zk, -1.0)
            best, cols = zk.argmax(axis=0), keep
            r, t, zmax = r[keep], t[keep], zmax[keep]
            ev = {"vital": _NAMES[best], "value": x[best, cols],
                  "baseline": med[best, cols].astype(np.float64),
                  "z": zmax}
            ep.step(out, r, t, [dev[keep]], [p.at("duration_s", r)], zmax < p.at("clear_k", r),
                    p.at("clear_s", r), p.at("max_gap_s", r), value=zmax, ext_key="z_max",
                    evidence=ev)
        return out.build()

    def _slots(self, r: np.ndarray, t: np.ndarray, utc_offset_s: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """Median and scale, (vitals, len(r)), of each sample's (row, local hour) slot."""
        loc = t + utc_offset_s
        lo, hi = float(loc.min()), float(loc.max())
        h_lo = int(np.floor(np.mod(lo, 86400.0) / 3600.0))
        # the hour is monotonic in time within a day: equal at both ends and less than an
        # hour apart, every sample shares it (one contiguous row per vital, no gather)
        if hi - lo < 3600.0 and h_lo == int(np.floor(np.mod(hi, 86400.0) / 3600.0)):
            med, scale = self.med_all[:, h_lo, :], self.scale_all[:, h_lo, :]
            if len(r) == self.n:  # distinct sorted rows, all of them: no gather at all
                return med, scale
            return med.take(r, axis=1), scale.take(r, axis=1)
        h = np.floor(np.mod(loc, 86400.0) / 3600.0).astype(np.intp)
        slot = h * self.n + r  # (hour, row) in the flattened (vital, hour x row) arrays
        v = len(BASE_VITALS)
        return (self.med_all.reshape(v, -1).take(slot, axis=1),
                self.scale_all.reshape(v, -1).take(slot, axis=1))

    def _min_abs(self, r: np.ndarray) -> np.ndarray:
        """Per-vital minimum absolute change, (vitals, 1) or (vitals, len(r))."""
        vals = [self.params.at(f"{v}_min_abs", r) for v in BASE_VITALS]
        if all(not isinstance(v, np.ndarray) for v in vals):
            return np.array(vals, np.float64).reshape(-1, 1)
        return np.stack([np.broadcast_to(np.asarray(v, np.float64), r.shape) for v in vals])
