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
from detectors.runs import EPS, Emitter, Fresh, TickGroup, rank_groups
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
    has = np.flatnonzero((new.sbp == new.sbp) | (new.dbp == new.dbp))  # not both NaN
    out: list[tuple[np.ndarray, ...]] = []
    if len(has):
        # lateness is judged among readings: rank them among themselves (with one sample a
        # device in the tick, readings are one a device too)
        single = len(rank_groups(new.row)) == 1
        for sel in ([np.arange(len(has))] if single else
                    rank_groups(new.row[has], cache=False)):
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
        self.n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, self.n)
        self._group = BpGroup([self])  # link_bp() may share a bigger one

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: these rows' conditions stay active until a clear-side reading."""
        if kind not in self.kinds or not len(rows):
            return
        g = self._group
        j = g.members.index(self)
        g.active[j, rows] = True
        g.onset[j, rows] = onset

    @abstractmethod
    def _judge(self, r: np.ndarray, sbp: np.ndarray, dbp: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(qualifying, clearing) for readings of rows `r`."""

    def update(self, state: TickState, now: float) -> list[Findings]:
        """Streaks of qualifying readings, run for every linked blood-pressure rule at once
        (`BpGroup`)."""
        return self._group.take(self, state, now)


class BpGroup(TickGroup):
    """The blood-pressure rules' shared tick: the same readings, freshness and worn test,
    and each rule's streak state as one row of (rules x devices) arrays, stepped with one
    call per operation for all rules. Findings are the same as each rule running alone."""

    def __init__(self, members: list[_BloodPressure]) -> None:
        n = members[0].n
        if any(m.n != n for m in members):
            raise ValueError("grouped rules must cover the same devices")
        k = len(members)
        self.members = members
        self.n = n
        self.fresh = Fresh(n)
        self.count = np.zeros((k, n), np.int32)
        self.streak_start = np.full((k, n), np.nan)
        self.last_reading = np.full(n, np.nan)  # the newest fresh, worn reading: every rule's
        self.active = np.zeros((k, n), bool)
        self.onset = np.full((k, n), np.nan)
        self.offsets = (np.arange(k, dtype=np.intp) * n)[:, None]  # flat index of (rule, 0)
        for m in members:
            m._group = self
        # parameters alike on every row, per rule: (rules, 1), built once
        self._shared = {name: np.array([m.params[name] for m in members], np.float64)
                        .reshape(-1, 1) for name in ("max_interval_s", "readings")
                        if not any(isinstance(m.params[name], np.ndarray) for m in members)}

    def _param(self, name: str, r: np.ndarray) -> np.ndarray:
        """Each rule's parameter for rows `r`, (rules, 1) or (rules, len(r))."""
        shared = self._shared.get(name)
        if shared is not None:
            return shared
        vals = [m.params.at(name, r) for m in self.members]
        if all(not isinstance(v, np.ndarray) for v in vals):
            return np.array(vals, np.float64).reshape(-1, 1)
        return np.stack([np.broadcast_to(np.asarray(v, np.float64), r.shape) for v in vals])

    def _run(self, state: TickState) -> dict[int, list[Findings]]:
        new = state.new
        if len(new) == 0:
            return {}
        outs = [Emitter(m.kinds[0]) for m in self.members]
        for r, t, sbp, dbp, worn in readings(new):
            ok = self.fresh.step(r, t) & worn
            if not ok.all():
                if not ok.any():
                    continue
                r, t, sbp, dbp = r[ok], t[ok], sbp[ok], dbp[ok]
            judged = [m._judge(r, sbp, dbp) for m in self.members]
            q = np.array([j[0] for j in judged])
            clear = np.array([j[1] for j in judged])
            fi = self.offsets + r  # (rules, len(r)) flat indices
            cont = (t - self.last_reading[r]) <= self._param("max_interval_s", r) + EPS
            count = np.where(cont, self.count.take(fi) + 1, 1)
            count *= q
            begun = self.streak_start.take(fi)
            start = np.where(q, np.where((count == 1) | (begun != begun), t, begun), np.nan)
            self.count.reshape(-1)[fi] = count
            self.streak_start.reshape(-1)[fi] = start
            self.last_reading[r] = t
            was = self.active.take(fi)
            fire = ~was & (count >= self._param("readings", r))
            cleared = was & clear
            onset = np.where(fire, start, self.onset.take(fi))
            if fire.any():
                self.onset.reshape(-1)[fi[fire]] = start[fire]
                self.active.reshape(-1)[fi[fire]] = True
            if cleared.any():
                self.active.reshape(-1)[fi[cleared]] = False
            for j, out in enumerate(outs):
                if fire[j].any() or cleared[j].any():
                    ev = {"sbp": sbp, "dbp": dbp, "readings": count[j].astype(np.float64),
                          "duration_s": t - onset[j]}
                    out.add(fire[j], r, 3, True, onset[j], ev)
                    out.add(cleared[j], r, 3, False, onset[j], ev)
        return {id(m): out.build() for m, out in zip(self.members, outs, strict=True)}


def link_bp(detectors: list[Any]) -> None:
    """Put every blood-pressure rule in `detectors` into one shared group (before any tick)."""
    BpGroup.link(detectors, _BloodPressure, "blood-pressure rules")


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
