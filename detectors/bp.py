"""Blood-pressure rules: hypotension and hypertensive crisis, "two readings in a row".

Consecutive blood-pressure readings at most `max_interval_s` apart; samples without blood
pressure between them do not break the streak. A clear-side reading clears the condition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import worn_ok
from detectors.runs import EPS, Emitter, Fresh, rank_groups
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns


class BpParams(DetectorParams):
    readings: int = Field(2, ge=1, description="qualifying readings in a row")
    max_interval_s: float = Field(7200.0, gt=0, description="longest gap inside a streak")


class HypotensionParams(BpParams):
    sbp_max: float = 90.0
    clear_margin: float = Field(5.0, ge=0)


class HypertensiveCrisisParams(BpParams):
    sbp_min: float = 180.0
    dbp_min: float = 120.0
    clear_margin: float = Field(10.0, ge=0)


_readings_cache: list[Any] = [None, None]


def readings(new: SampleColumns) -> list[tuple[np.ndarray, ...]]:
    """The tick's blood-pressure readings (samples with sbp or dbp), by rank within device
    as `rank_groups` orders them: (rows, ts, sbp, dbp, worn or unknown) per rank, float64
    readings. Both rules read them; the tick's result is kept for the second."""
    if _readings_cache[0] is new:
        return list(_readings_cache[1])
    has = np.flatnonzero(~(np.isnan(new.sbp) & np.isnan(new.dbp)))
    out: list[tuple[np.ndarray, ...]] = []
    if len(has):
        # lateness is judged among readings: rank them among themselves
        for sel in rank_groups(new.row[has], cache=False):
            idx = has[sel]
            out.append((new.row[idx], new.ts[idx], new.sbp[idx].astype(np.float64),
                        new.dbp[idx].astype(np.float64), worn_ok(new.worn[idx])))
    _readings_cache[0], _readings_cache[1] = new, out
    return list(out)


class _BloodPressure(ABC):
    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[BpParams]]
    sample_driven: ClassVar[bool] = True  # replay spans: see detectors.base.Detector

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.fresh = Fresh(n)
        self.count = np.zeros(n, np.int32)
        self.streak_start = np.full(n, np.nan)
        self.last_reading = np.full(n, np.nan)
        self.active = np.zeros(n, bool)
        self.onset = np.full(n, np.nan)

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: these rows' conditions stay active until a clear-side reading."""
        if kind not in self.kinds or not len(rows):
            return
        self.active[rows] = True
        self.onset[rows] = onset

    @abstractmethod
    def _judge(self, r: np.ndarray, sbp: np.ndarray, dbp: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(qualifying, clearing) for readings of rows `r`."""

    def update(self, state: TickState, now: float) -> list[Findings]:
        new = state.new
        if len(new) == 0:
            return []
        out = Emitter(self.kinds[0])
        p = self.params
        for r, t, sbp, dbp, worn in readings(new):
            ok = self.fresh.step(r, t) & worn
            if not ok.all():
                if not ok.any():
                    continue
                r, t, sbp, dbp = r[ok], t[ok], sbp[ok], dbp[ok]
            q, clear = self._judge(r, sbp, dbp)
            cont = (t - self.last_reading[r]) <= p.at("max_interval_s", r) + EPS
            count = np.where(q, np.where(cont, self.count[r] + 1, 1), 0)
            start = np.where(q & ((count == 1) | np.isnan(self.streak_start[r])), t,
                             self.streak_start[r])
            start = np.where(q, start, np.nan)
            self.count[r], self.streak_start[r], self.last_reading[r] = count, start, t
            was = self.active[r]
            fire = ~was & (count >= p.at("readings", r))
            cleared = was & clear
            self.onset[r[fire]] = start[fire]
            onset = self.onset[r]
            ev = {"sbp": sbp, "dbp": dbp, "readings": count.astype(np.float64),
                  "duration_s": t - onset}
            out.add(fire, r, 3, True, onset, ev)
            out.add(cleared, r, 3, False, onset, ev)
            self.active[r[fire]] = True
            self.active[r[cleared]] = False
        return out.build()


class Hypotension(_BloodPressure):
    """SBP <= 90 on two consecutive readings (high)."""

    name = "hypotension"
    kinds = ("hypotension",)
    Params = HypotensionParams

    def _judge(self, r: np.ndarray, sbp: np.ndarray, dbp: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        thr = self.params.at("sbp_max", r)
        return sbp <= thr, sbp >= thr + self.params.at("clear_margin", r)


class HypertensiveCrisis(_BloodPressure):
    """SBP >= 180 or DBP >= 120 on two consecutive readings (high)."""

    name = "hypertensive_crisis"
    kinds = ("hypertensive_crisis",)
    Params = HypertensiveCrisisParams

    def _judge(self, r: np.ndarray, sbp: np.ndarray, dbp: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        s, d = self.params.at("sbp_min", r), self.params.at("dbp_min", r)
        m = self.params.at("clear_margin", r)
        q = (sbp >= s) | (dbp >= d)
        clear = ~(sbp > s - m) & ~(dbp > d - m)
        return q, clear
