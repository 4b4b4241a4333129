"""Every detector resumes the conditions of open alerts after a restart (`resume`) and
clears them when the data says so: without it a restarted pipeline never sent the clearing
finding, and an alert stayed "condition active" until someone resolved it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from detectors_harness import Feeder, cols

from detectors.bench import fit_baseline
from detectors.registry import DETECTORS, all_kinds, link

T0 = 1_764_316_800.0  # 16:00 local (UTC+8): inside awake hours
ONSET = T0 - 600.0
ALERT_SEVERITY = {"fall": 4, "hypoxemia": 4, "tachycardia": 4, "news2": 3, "inactivity": 3,
                  "not_worn": 2, "device_offline": 2, "low_battery": 1,
                  "baseline_deviation": 1}
# the severity each detector holds and clears at: the alert's where the rule has that level
CLEARED_AT = {**ALERT_SEVERITY, "bradycardia": 3, "bradypnoea": 3, "tachypnoea": 3,
              "fever": 2, "hypothermia": 2, "hypotension": 3, "hypertensive_crisis": 3}


def _healthy(minutes: float, start: float = T0) -> Any:
    """Every 10 s: ordinary vitals, a blood pressure, at rest yet not still, worn, charged."""
    ts = start + 10.0 * np.arange(int(minutes * 6))
    return cols(0, ts, hr=72.0, spo2=97.0, rr=15.0, temp_c=36.8, sbp=120.0, dbp=80.0,
                activity=0.1, worn=1, fall=0, battery=80.0)


def _feeder() -> Feeder:
    detectors = link([cls(1) for cls in DETECTORS.values()])
    fit_baseline(detectors)
    return Feeder(detectors, 1, started_at=T0 - 3600.0)


def _run(feeder: Feeder) -> list[dict[str, Any]]:
    found = []
    for k in range(30):  # a tick a minute, a minute of samples each
        found += feeder.tick(_healthy(1, T0 + 60.0 * k), T0 + 60.0 * (k + 1))
    return found


@pytest.mark.parametrize("kind", all_kinds())  # a new kind needs its line in CLEARED_AT
def test_a_resumed_condition_clears_on_healthy_data(kind: str) -> None:
    feeder = _feeder()
    for d in feeder.detectors:
        if kind in d.kinds:
            d.resume(kind, np.array([0]), np.array([ONSET]),
                     np.array([ALERT_SEVERITY.get(kind, 3)], np.int8))
    got = [(r["kind"], r["row"], r["active"], r["onset"], r["severity"])
           for r in _run(feeder)]
    assert got == [(kind, 0, False, ONSET, CLEARED_AT[kind])]


def test_without_resume_healthy_data_finds_nothing() -> None:
    assert _run(_feeder()) == []


def test_resume_ignores_other_kinds_and_no_rows() -> None:
    feeder = _feeder()
    for d in feeder.detectors:
        d.resume("not_a_kind", np.array([0]), np.array([ONSET]), np.array([4], np.int8))
        for kind in d.kinds:
            d.resume(kind, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int8))
    assert _run(feeder) == []
