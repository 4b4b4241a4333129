"""`carewatch evaluate`'s scoring (detectors/evaluate.py): matching windows, early detection
of gradual events, secondary kinds, false alerts per resident-day."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.evaluate import score

T = 1_764_316_800.0


def opened(resident: str, kind: str, at: float, severity: str = "high") -> dict[str, Any]:
    return {"alert_id": f"{resident}-{kind}-{at}", "resident_id": resident, "kind": kind,
            "opened_at": at, "updated_at": at, "severity": severity,
            "condition_active": True}


def truth(resident: str, kind: str, start: float, end: float, **extra: Any) -> dict[str, Any]:
    return {"resident_id": resident, "kind": kind, "start": start, "end": end,
            "severity": "high", **extra}


@pytest.mark.parametrize(("alert_at", "found"), [
    (T - 121.0, False),  # before start - early_s (120 s)
    (T - 119.0, True),
    (T + 3600.0 + 600.0, True),  # end + grace_s (600 s)
    (T + 3600.0 + 601.0, False),
])
def test_a_detection_counts_inside_the_window(alert_at: float, found: bool) -> None:
    r = score([opened("r-1", "hypoxemia", alert_at)],
              [truth("r-1", "hypoxemia", T, T + 3600.0)], resident_days=1.0)
    assert r.kinds["hypoxemia"].detected == int(found)
    assert r.kinds["hypoxemia"].false_alerts == int(not found)
    assert r.recall_high_critical == (1.0 if found else 0.0)


def test_a_gradual_event_detected_during_its_ramp_is_early_not_false() -> None:
    alerts = [opened("r-1", "news2", T - 900.0, "medium")]
    plain = score(alerts, [truth("r-1", "news2", T, T + 3600.0)], resident_days=1.0)
    assert (plain.kinds["news2"].detected, plain.kinds["news2"].false_alerts) == (0, 1)
    ramp = score(alerts, [truth("r-1", "news2", T, T + 3600.0, ramp_start=T - 3600.0)],
                 resident_days=1.0)
    assert (ramp.kinds["news2"].detected, ramp.kinds["news2"].false_alerts) == (1, 0)
    assert ramp.kinds["news2"].delay_median_s == pytest.approx(-900.0 - 300.0)


def test_secondary_kinds_during_an_event_are_not_false() -> None:
    alerts = [opened("r-1", "hypoxemia", T + 60.0), opened("r-1", "news2", T + 400.0),
              opened("r-2", "news2", T + 400.0, "medium")]
    r = score(alerts, [truth("r-1", "hypoxemia", T, T + 3600.0)], resident_days=2.0)
    assert r.kinds["news2"].secondary == 1 and r.kinds["news2"].false_alerts == 1
    assert r.false_alerts_per_resident_day == pytest.approx(0.5)
    assert r.ppv == pytest.approx(2 / 3)
