"""Human-readable one-line messages for findings, e.g. "SpO2 ≤ 85% for 75 s"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _dur(ev: dict[str, Any]) -> str:
    d = ev.get("duration_s")
    if not isinstance(d, int | float) or d != d:
        return ""
    if d >= 3600:
        return f" for {d / 3600:.1f} h"
    if d >= 120:
        return f" for {d / 60:.0f} min"
    return f" for {d:.0f} s"


def _num(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or value != value:
        return "?"
    return f"{value:.{digits}f}"


def _vital(label: str, key: str, cmp: str, unit: str, digits: int = 0) -> Callable[..., str]:
    def build(severity: str, ev: dict[str, Any]) -> str:
        return f"{label} {cmp} {_num(ev.get('threshold'), digits)}{unit}" + _dur(ev) + (
            f" (worst {_num(ev.get(key), digits)}{unit})" if key in ev else "")
    return build


def _bp(label: str) -> Callable[..., str]:
    def build(severity: str, ev: dict[str, Any]) -> str:
        return (f"{label}: BP {_num(ev.get('sbp'))}/{_num(ev.get('dbp'))} mmHg, "
                f"{_num(ev.get('readings'))} readings in a row")
    return build


def _fall(severity: str, ev: dict[str, Any]) -> str:
    if ev.get("source") == "device":
        return "Fall reported by the device"
    return f"Possible fall: impact {_num(ev.get('impact_g'), 1)} g then stillness" + _dur(ev)


def _news2(severity: str, ev: dict[str, Any]) -> str:
    parts = [f"{k} {_num(ev.get(k), 1 if k == 'temp_c' else 0)}"
             for k in ("rr", "spo2", "sbp", "hr", "temp_c") if isinstance(ev.get(k), int | float)
             and ev.get(k) == ev.get(k)]
    return f"NEWS2 score {_num(ev.get('score'))}" + _dur(ev) + (
        f" ({', '.join(parts)})" if parts else "")


def _baseline(severity: str, ev: dict[str, Any]) -> str:
    return (f"{ev.get('vital', 'vital')} {_num(ev.get('value'), 1)} vs usual "
            f"{_num(ev.get('baseline'), 1)} for this hour (z {_num(ev.get('z'), 1)})" + _dur(ev))


def _hazard(severity: str, ev: dict[str, Any]) -> str:
    # a person's description (routines: 发现隐患), on one line as every message is
    note = " ".join(str(ev.get("note") or "").split())
    return "Hazard found at the resident's home" + (f": {note}" if note else "")


MESSAGES: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "hypoxemia": _vital("SpO2", "spo2_min", "≤", "%"),
    "bradycardia": _vital("HR", "hr_min", "≤", " bpm"),
    "tachycardia": _vital("HR at rest", "hr_max", "≥", " bpm"),
    "bradypnoea": _vital("RR", "rr_min", "≤", "/min"),
    "tachypnoea": _vital("RR", "rr_max", "≥", "/min"),
    "fever": _vital("Temperature", "temp_c_max", "≥", " °C", 1),
    "hypothermia": _vital("Temperature", "temp_c_min", "≤", " °C", 1),
    "hypotension": _bp("Low blood pressure"),
    "hypertensive_crisis": _bp("Hypertensive crisis"),
    "fall": _fall,
    "news2": _news2,
    "baseline_deviation": _baseline,
    "inactivity": lambda s, ev: "No movement in awake hours" + _dur(ev),
    "not_worn": lambda s, ev: "Device not worn" + _dur(ev),
    "device_offline": lambda s, ev: ("Device offline (Last Will)" if ev.get("last_will")
                                     else f"No data for {_num(ev.get('silent_s', 0) / 60)} min"),
    "low_battery": lambda s, ev: f"Battery low: {_num(ev.get('battery'))}%",
    "hazard": _hazard,
}


def message(kind: str, severity: str, evidence: dict[str, Any]) -> str:
    """One line for staff; never raises (unknown kinds and missing evidence degrade)."""
    try:
        build = MESSAGES.get(kind)
        return build(severity, evidence) if build else kind.replace("_", " ")
    except Exception:  # a message must never stop an alert
        return kind.replace("_", " ")
