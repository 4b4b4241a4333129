"""Awake-hours rules on wearing and movement: inactivity and not worn.

Windows lie wholly inside awake hours (local time = ts + utc_offset_s): a sample outside
them breaks the run, so the earliest possible inactivity finding is 3 h after 07:00.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.fused_awake import AwakeGroup
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import f32_threshold
from ingest.devices import DeviceTable


def awake(ts: np.ndarray, utc_offset_s: float, start_h: Any, end_h: Any) -> np.ndarray:
    """True where local time of day lies in [start_h, end_h)."""
    if len(ts) and not isinstance(start_h, np.ndarray) and not isinstance(end_h, np.ndarray):
        # a tick's samples are seconds apart: when the earliest and the latest lie in one
        # day and on the same side of both bounds, so does every sample (time of day only
        # grows within a day), and the answer is one value
        lo, hi = float(ts.min()) + utc_offset_s, float(ts.max()) + utc_offset_s
        sod_lo, sod_hi = float(np.mod(lo, 86400.0)), float(np.mod(hi, 86400.0))
        if hi - lo < 86400.0 and sod_lo <= sod_hi:
            a, b = start_h * 3600.0, end_h * 3600.0
            if a <= sod_lo and sod_hi < b:
                return np.ones(len(ts), bool)
            if sod_hi < a or sod_lo >= b:
                return np.zeros(len(ts), bool)
    sod = np.mod(ts + utc_offset_s, 86400.0)
    return (sod >= start_h * 3600.0) & (sod < end_h * 3600.0)


class AwakeParams(DetectorParams):
    awake_start_h: float = Field(7.0, ge=0, le=24)
    awake_end_h: float = Field(21.0, ge=0, le=24)


class InactivityParams(AwakeParams):
    still_g: float = Field(0.02, ge=0)
    duration_s: float = Field(3 * 3600.0, ge=0)
    max_gap_s: float = Field(30.0, gt=0)
    clear_g: float = Field(0.1, gt=0, description="movement at or above this ends it")


class NotWornParams(AwakeParams):
    duration_s: float = Field(1800.0, ge=0)
    # an off-wrist device may report less often than a worn one
    max_gap_s: float = Field(120.0, gt=0)
    clear_s: float = Field(0.0, ge=0)


class _AwakeRule(ABC):
    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[AwakeParams]]
    severity: ClassVar[int]
    sample_driven: ClassVar[bool] = True  # replay spans: see detectors.base.Detector

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        self.n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, self.n)
        self._group = AwakeGroup([self])  # link_awake() may share a bigger one

    @abstractmethod
    def _judge(self, r: np.ndarray, new: Any, sel: Any, day: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(included, qualifying, breaks, clear, value) for samples `sel` (indices, or a
        slice) of rows `r`; values of any real type (the group widens the ones it keeps)."""

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: hold these rows' conditions active, so that they clear as usual."""
        if kind not in self.kinds or not len(rows):
            return
        self._group.resume_member(self, rows, onset, self.severity)

    def update(self, state: TickState, now: float) -> list[Findings]:
        """Freshness, the awake window and the episodes (`detectors.runs.Episodes`: runs with
        gap tolerance, breaks outside awake hours) run in the shared group."""
        return self._group.take(self, state, now)

    ext_key: ClassVar[str | None] = None  # evidence key of the extreme value, if any

    def _clear_param(self) -> Any:
        """Seconds clear samples must hold (scalar or per row)."""
        return 0.0


class Inactivity(_AwakeRule):
    """Worn, awake hours, activity <= 0.02 g for >= 3 h (high)."""

    name = "inactivity"
    kinds = ("inactivity",)
    Params = InactivityParams
    severity = 3
    ext_key = "activity_max"

    def _judge(self, r: np.ndarray, new: Any, sel: Any, day: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        a = new.activity[sel]  # float32
        off = new.worn[sel] == 0
        on = ~off
        inc = (a == a) | off
        # thresholds rounded through float32, the reading's type (`quality.f32_threshold`):
        # a reading of exactly `still_g` is still, as the rule says
        q = (a <= f32_threshold(p.at("still_g", r))) & day & on
        clear = (a >= f32_threshold(p.at("clear_g", r))) & on
        return inc, q, ~day | off, clear, np.where(off, np.float32(np.nan), a)


class NotWorn(_AwakeRule):
    """`worn` false for >= 30 min in awake hours (medium)."""

    name = "not_worn"
    kinds = ("not_worn",)
    Params = NotWornParams
    severity = 2

    def _judge(self, r: np.ndarray, new: Any, sel: Any, day: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        w = new.worn[sel]
        inc = w >= 0
        off = w == 0
        return inc, off & day, ~day, w == 1, w

    def _clear_param(self) -> Any:
        return self.params["clear_s"]
