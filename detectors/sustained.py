"""Sustained-threshold rules on one vital: hypoxemia, brady/tachycardia, brady/tachypnoea,
fever, hypothermia. Score = the vital against its thresholds; decision = sustained runs
with gap tolerance, then clearing with hysteresis (see `detectors.runs.Episodes`)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from detectors.base import Findings, TickState
from detectors.fused import SustainedGroup
from detectors.params import DetectorParams, ParamTable, n_rows
from ingest.devices import DeviceTable


def _secs(default: float) -> Any:
    """A duration field (subclasses redeclare defaults; a bare default would drop `ge`)."""
    return Field(default, ge=0)


class SustainedParams(DetectorParams):
    """Thresholds of a sustained rule. `critical_*` unset = no critical level.

    The contract excludes only samples taken while not worn (and, for SpO2 and heart rate,
    while moving). The jump and flat-line filters (`detectors.quality`) are off by default:
    on, they drop real readings (a step to a sustained value counts from its second sample;
    a steady value reported at 1 Hz, e.g. a smoothed heart rate, would stop counting after
    `flat_samples`), so a rule that meets the contract's duration would not open."""

    low: ClassVar[bool | None] = None  # True: low values qualify (the rule's direction)

    threshold: float
    duration_s: float = _secs(60.0)
    critical_threshold: float | None = None
    critical_duration_s: float = _secs(30.0)
    max_gap_s: float = Field(30.0, gt=0, description="gap between qualifying samples tolerated")
    clear_margin: float = Field(2.0, ge=0, description="hysteresis: clears this far back")
    clear_s: float = Field(60.0, ge=0, description="clear-side values held this long")
    rest_g: float | None = Field(None, gt=0, description="exclude samples with activity above")
    recovery_s: float = Field(0.0, ge=0, description="also exclude this long after motion")
    max_jump: float = Field(1e9, gt=0, description="implausible change between readings "
                            "(opt-in: 1e9 is off)")
    flat_samples: int = Field(0, ge=0, description="identical readings in a row = stuck "
                              "(opt-in: 0 is off)")

    @field_validator("critical_threshold")
    @classmethod
    def _critical_beyond(cls, v: float | None, info: ValidationInfo) -> float | None:
        return _beyond(cls.low, v, info.data.get("threshold"), "threshold")


class SustainedThreshold:
    """Base: subclasses set the class attributes below and `Params` defaults."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    vital: ClassVar[str]
    low: ClassVar[bool]  # True: value <= threshold qualifies
    severity: ClassVar[int]
    Params: ClassVar[type[SustainedParams]]
    sample_driven: ClassVar[bool] = True  # replay spans: see detectors.base.Detector

    def __init__(self, devices: DeviceTable | int,
                 params: SustainedParams | list[Any] | None = None) -> None:
        n = n_rows(devices)
        self.n = n
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.thr = self._row_array(self._threshold(devices, False), n)
        crit = self._threshold(devices, True)
        self.crit = None if crit is None else self._row_array(crit, n)
        self._group = SustainedGroup([self])  # link_sustained() may share a bigger one

    @staticmethod
    def _row_array(value: Any, n: int) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, np.float64), (n,)).copy()

    def _threshold(self, devices: DeviceTable | int, critical: bool) -> Any:
        if critical:
            if self.params["critical_threshold"] is None:  # unset on every row
                return None
            return self.params["critical_threshold"]
        return self.params["threshold"]

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: hold these rows' conditions active (critical where the alert is
        and the rule has a critical level), so that they clear as usual."""
        if kind not in self.kinds or not len(rows):
            return
        sev = np.full(len(rows), self.severity, np.int8)
        if self.crit is not None and severity is not None:
            sev[np.asarray(severity) >= 4] = 4
        self._group.resume_member(self, rows, onset, sev)

    def update(self, state: TickState, now: float) -> list[Findings]:
        """Gating (freshness, wear, rest, jumps, flat-lines) and the sustained-run episodes
        (`detectors.runs.Episodes`, severity by level, hysteresis) run in the shared group."""
        return self._group.take(self, state, now)


def _beyond(low: bool | None, crit: float | None, thr: float | None, name: str
            ) -> float | None:
    """`crit` unless it lies on the wrong side of `thr` (a low rule's critical level is at
    or below its threshold, a high rule's at or above)."""
    if crit is None or thr is None or low is None:
        return crit
    if (crit > thr) if low else (crit < thr):
        side = "at or below" if low else "at or above"
        raise ValueError(f"expected {side} {name} ({thr:g}): the critical level is the "
                         f"more extreme one, got {crit:g}")
    return crit


class HypoxemiaParams(SustainedParams):
    low = True
    threshold: float = 90.0
    duration_s: float = _secs(60.0)
    critical_threshold: float | None = 85.0
    critical_duration_s: float = _secs(30.0)
    copd_threshold: float = Field(84.0, description="NEWS2 scale 2, residents with copd")
    copd_critical_threshold: float = 80.0
    rest_g: float | None = Field(0.1, gt=0)

    @field_validator("copd_critical_threshold")
    @classmethod
    def _copd_critical_beyond(cls, v: float, info: ValidationInfo) -> float | None:
        return _beyond(True, v, info.data.get("copd_threshold"), "copd_threshold")


class Hypoxemia(SustainedThreshold):
    """SpO2 <= 90 for 60 s (high), <= 85 for 30 s (critical); copd: 84 / 80."""

    name = "hypoxemia"
    kinds = ("hypoxemia",)
    vital = "spo2"
    low = True
    severity = 3
    Params = HypoxemiaParams

    def _threshold(self, devices: DeviceTable | int, critical: bool) -> Any:
        copd = np.zeros(n_rows(devices), bool) if isinstance(devices, int) else (
            devices.has_condition("copd"))
        a, b = (("critical_threshold", "copd_critical_threshold") if critical
                else ("threshold", "copd_threshold"))
        return np.where(copd, self.params[b], self.params[a])


class BradycardiaParams(SustainedParams):
    low = True
    threshold: float = 40.0
    duration_s: float = _secs(60.0)
    clear_margin: float = Field(5.0, ge=0)
    rest_g: float | None = Field(0.1, gt=0)


class Bradycardia(SustainedThreshold):
    """HR <= 40 for 60 s (high)."""

    name = "bradycardia"
    kinds = ("bradycardia",)
    vital = "hr"
    low = True
    severity = 3
    Params = BradycardiaParams


class TachycardiaParams(SustainedParams):
    low = False
    threshold: float = 130.0
    duration_s: float = _secs(120.0)
    critical_threshold: float | None = 150.0
    critical_duration_s: float = _secs(60.0)
    clear_margin: float = Field(10.0, ge=0)
    rest_g: float | None = Field(0.1, gt=0)


class Tachycardia(SustainedThreshold):
    """HR >= 130 at rest for 120 s (high), >= 150 for 60 s (critical)."""

    name = "tachycardia"
    kinds = ("tachycardia",)
    vital = "hr"
    low = False
    severity = 3
    Params = TachycardiaParams


class BradypnoeaParams(SustainedParams):
    low = True
    threshold: float = 8.0
    duration_s: float = _secs(60.0)


class Bradypnoea(SustainedThreshold):
    """RR <= 8 for 60 s (high)."""

    name = "bradypnoea"
    kinds = ("bradypnoea",)
    vital = "rr"
    low = True
    severity = 3
    Params = BradypnoeaParams


class TachypnoeaParams(SustainedParams):
    low = False
    threshold: float = 25.0
    duration_s: float = _secs(120.0)
    clear_margin: float = Field(3.0, ge=0)


class Tachypnoea(SustainedThreshold):
    """RR >= 25 for 120 s (high)."""

    name = "tachypnoea"
    kinds = ("tachypnoea",)
    vital = "rr"
    low = False
    severity = 3
    Params = TachypnoeaParams


class TemperatureParams(SustainedParams):
    duration_s: float = _secs(600.0)
    # temperature arrives less often than the other vitals (contract): tolerate longer gaps
    max_gap_s: float = Field(900.0, gt=0)
    clear_margin: float = Field(0.3, ge=0)
    clear_s: float = Field(300.0, ge=0)


class FeverParams(TemperatureParams):
    low = False
    threshold: float = 38.0


class HypothermiaParams(TemperatureParams):
    low = True
    threshold: float = 35.0


class Fever(SustainedThreshold):
    """Temperature >= 38.0 °C for 10 min (medium)."""

    name = "fever"
    kinds = ("fever",)
    vital = "temp_c"
    low = False
    severity = 2
    Params = FeverParams


class Hypothermia(SustainedThreshold):
    """Temperature <= 35.0 °C for 10 min (medium)."""

    name = "hypothermia"
    kinds = ("hypothermia",)
    vital = "temp_c"
    low = True
    severity = 2
    Params = HypothermiaParams
