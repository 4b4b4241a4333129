"""Fall: the device's own fall flag on a worn device, or an impact followed by stillness.

Impact-then-stillness: activity >= `impact_g`, then stillness (activity at or below
`still_g`) lasting `still_s`, from the impact or from the latest movement in a short
settling time after it (which restarts it rather than cancelling the fall). Later
movement, taking the device off, or a gap longer than `max_gap_s` cancels the candidate.
The condition clears when the resident moves again for `clear_s`, or lapses `hold_s` after
onset, so that a later fall is a new finding.

A device's fall flag counts even when it arrives late, after newer samples of that device
were judged (a device that was cut off sends its live reading, then its backlog): it fires
unless a fall is active or a flag at least as new was already judged for that device. The
impact-then-stillness signature is judged in time order only (docs/detectors.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import f32_threshold
from detectors.runs import EPS, Emitter, Fresh, rank_groups
from ingest.devices import DeviceTable


class FallParams(DetectorParams):
    use_flag: bool = Field(True, description="trust the device's own fall detector")
    impact_g: float = Field(2.5, gt=0)
    still_g: float = Field(0.05, ge=0)
    still_s: float = Field(60.0, ge=0)
    settle_s: float = Field(10.0, ge=0, description="movement right after the impact is allowed")
    max_gap_s: float = Field(30.0, gt=0)
    clear_g: float = Field(0.1, gt=0, description="movement at or above this ends the condition")
    clear_s: float = Field(20.0, ge=0)
    hold_s: float = Field(900.0, gt=0, description="a fall condition lapses after this long")


class Fall:
    """Critical finding on a flagged fall or an impact-then-stillness signature."""

    name: ClassVar[str] = "fall"
    kinds: ClassVar[tuple[str, ...]] = ("fall",)
    Params: ClassVar[type[FallParams]] = FallParams
    # runs at once when a device reports a fall (`Pipeline.fall_lane`), not only on ticks:
    # `Fresh` drops samples it has already judged when the tick hands them over again
    urgent: ClassVar[bool] = True
    sample_driven: ClassVar[bool] = True  # replay spans: see detectors.base.Detector

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        # activity is float32: thresholds rounded through float32, so that a reading of
        # exactly 0.05 g is still and one of exactly 2.5 g an impact (float32(0.05) > 0.05)
        self.impact_g = f32_threshold(self.params["impact_g"])
        self.still_g = f32_threshold(self.params["still_g"])
        self.clear_g = f32_threshold(self.params["clear_g"])
        self.fresh = Fresh(n)
        self.impact = np.full(n, np.nan)  # ts of a candidate impact
        self.peak = np.full(n, np.nan)
        self.last = np.full(n, np.nan)  # last activity sample ts since the impact
        # when the stillness going on since the impact began (NaN: no impact pending)
        self.still_from = np.full(n, np.nan)
        self.active = np.zeros(n, bool)
        self.onset = np.full(n, np.nan)
        self.move_start = np.full(n, np.nan)
        # ts of the newest fall flag judged per row, in time order or late: a late flag
        # older than this one was judged already (the fall lane's samples come again)
        self.flag_ts = np.full(n, -np.inf)
        self._idle = True  # no candidate pending and no fall active on any row

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: these rows' falls stay active until the resident moves again
        for `clear_s` or `hold_s` passes after onset, as usual."""
        if kind not in self.kinds or not len(rows):
            return
        self.active[rows] = True
        self.onset[rows] = onset
        self._idle = False

    def update(self, state: TickState, now: float) -> list[Findings]:
        new = state.new
        if len(new) == 0:
            return []
        out = Emitter("fall")
        p = self.params
        for idx in rank_groups(new.row):
            whole = len(idx) == len(new)
            r, t = (new.row, new.ts) if whole else (new.row[idx], new.ts[idx])
            ok = self.fresh.step(r, t)
            if ok.all():  # the usual tick: views of the samples, no gathers
                sel: Any = slice(None) if whole else idx
            else:
                self._late_flags(new, idx[~ok], r[~ok], t[~ok], out)
                if not ok.any():
                    continue
                sel, r, t = idx[ok], r[ok], t[ok]
            a = new.activity[sel]
            worn = new.worn[sel]
            flag = new.fall[sel] == 1
            if flag.any():  # rare: the rest of the flag test only then
                flag &= (worn != 0) & p.at("use_flag", r)
                self.flag_ts[r[flag]] = t[flag]
            hit = a >= _at(self.impact_g, r)
            # only rows with an impact, a flag, a pending candidate or an active fall matter
            if self._idle:  # no candidate pending or fall active on any row
                live = np.flatnonzero(hit | flag)
            else:
                dense = len(r) == len(self.active)  # distinct rows, all of them
                imp, act = ((self.impact, self.active) if dense
                            else (self.impact[r], self.active[r]))
                live = np.flatnonzero(hit | flag | (imp == imp) | act)
            if len(live) == 0:
                continue
            self._idle = False  # recounted at the end of the tick
            r, t, flag = r[live], t[live], flag[live]
            a = a[live].astype(np.float64)
            worn = worn[live]
            off = worn == 0
            have = ~np.isnan(a)
            hit = have & (a >= _at(self.impact_g, r)) & ~off
            still = have & (a <= _at(self.still_g, r))
            gap = (t - self.last[r]) > p.at("max_gap_s", r)
            imp = self.impact[r]
            pending = ~np.isnan(imp)
            settled = (t - imp) > p.at("settle_s", r)
            cancel = pending & (off | gap | (have & ~still & settled))
            imp = np.where(cancel, np.nan, imp)
            imp = np.where(hit, t, imp)
            peak = np.where(hit, a, np.where(cancel, np.nan, self.peak[r]))
            # the stillness must itself last still_s: it begins at the impact, or at the
            # latest movement while settling (a reading covers the time since the one
            # before, so stillness that follows a sample began at that sample)
            sf = np.where(hit | (pending & have & ~still), t, self.still_from[r])
            sf = np.where(cancel & ~hit, np.nan, sf)
            last = np.where(have | hit, t, self.last[r])
            signature = ~np.isnan(imp) & ((t - sf) >= p.at("still_s", r) - EPS)  # NaN: False
            was = self.active[r]
            fire = ~was & (flag | signature)
            onset = np.where(signature & ~flag, imp, t)
            self.onset[r[fire]] = onset[fire]
            # a fired signature is consumed
            imp = np.where(fire, np.nan, imp)
            self.impact[r], self.peak[r], self.still_from[r], self.last[r] = imp, peak, sf, last
            # clearing: sustained movement without a new fall flag
            moving = have & (a >= _at(self.clear_g, r)) & ~flag & ~off
            ms = np.where(was & moving, np.where(np.isnan(self.move_start[r]), t,
                                                 self.move_start[r]), np.nan)
            self.move_start[r] = ms
            cleared = was & (((t - ms) >= p.at("clear_s", r))
                             | ((t - self.onset[r]) >= p.at("hold_s", r)))
            on = self.onset[r]
            if not (fire.any() or cleared.any()):
                continue
            ev = {"source": np.where(flag, "device", "impact_stillness").astype(object),
                  "impact_g": np.where(flag, a, peak), "duration_s": t - on}
            out.add(fire, r, 4, True, on, ev)
            out.add(cleared, r, 4, False, on, ev)
            self.active[r[fire]] = True
            self.active[r[cleared]] = False
            self.move_start[r[cleared]] = np.nan
        if not self._idle:
            self._settle()
        return out.build()

    def _late_flags(self, new: Any, sel: np.ndarray, r: np.ndarray, t: np.ndarray,
                    out: Emitter) -> None:
        """Late samples `sel` (rows `r`, distinct): a fall flag on a worn device fires, onset
        at its own ts, unless a fall is active or a flag at least as new was judged."""
        flag = new.fall[sel] == 1
        if not flag.any():
            return
        flag &= (new.worn[sel] != 0) & self.params.at("use_flag", r)
        r, t, sel = r[flag], t[flag], sel[flag]
        fire = ~self.active[r] & (t > self.flag_ts[r])
        self.flag_ts[r] = np.maximum(self.flag_ts[r], t)
        if not fire.any():
            return
        self._idle = False
        self.onset[r[fire]] = t[fire]
        self.active[r[fire]] = True
        ev = {"source": np.full(len(r), "device", object),
              "impact_g": new.activity[sel].astype(np.float64), "duration_s": np.zeros(len(r))}
        out.add(fire, r, 4, True, t, ev)

    def _settle(self) -> None:
        """Recount whether any row has a candidate pending or a fall active (after a tick
        that was not idle: only a tick that touched rows can have changed it)."""
        self._idle = not (self.active.any() or (self.impact == self.impact).any())


def _at(value: Any, rows: np.ndarray) -> Any:
    """A threshold for `rows`: the shared scalar, or the per-row array's entries."""
    return value[rows] if isinstance(value, np.ndarray) else value
