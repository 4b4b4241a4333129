"""Score alert events against a truth file: per-kind recall, PPV, detection delay, false
alerts per resident-day. Pure functions; `carewatch evaluate` does the I/O.

Truth records (JSON lines, shared with the simulators): `{"resident_id", "kind", "start",
"end", "severity"?, "primary"?, "ramp_start"?}`, times in epoch s. An alert matches a truth
record of the same resident and kind when it opened (or its condition became active again)
within [start - early_s, end + grace_s]; a gradual event (a deterioration) may give
`ramp_start`, where its physiology starts to change, and an alert from then on is an early
detection (negative delay), not a false one. Records with
`"primary": false` (co-alerts an event implies, e.g. NEWS2) may be matched but are not
required: missing them costs no recall, matching them is not a false alert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}

# Each default rule's own duration (s), by kind and severity: delay is counted beyond it.
# Fall: the impact-then-stillness signature (a device flag fires at once). Blood pressure:
# the rule needs a second reading, 5 min apart in the simulators' events.
RULE_DURATION_S: dict[str, float] = {
    "fall": 60.0, "hypoxemia": 60.0, "hypoxemia:critical": 30.0, "bradycardia": 60.0,
    "tachycardia": 120.0, "tachycardia:critical": 60.0, "bradypnoea": 60.0,
    "tachypnoea": 120.0, "fever": 600.0, "hypothermia": 600.0, "hypotension": 300.0,
    "hypertensive_crisis": 300.0, "news2": 300.0, "baseline_deviation": 600.0,
    "inactivity": 3 * 3600.0, "not_worn": 1800.0, "device_offline": 600.0, "low_battery": 0.0,
}


SECONDARY_KINDS = frozenset({"news2", "baseline_deviation"})


def rule_duration(kind: str, severity: str | None) -> float:
    return RULE_DURATION_S.get(f"{kind}:{severity}", RULE_DURATION_S.get(kind, 0.0))


@dataclass
class KindReport:
    kind: str
    truth: int = 0  # required truth records
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    secondary: int = 0  # aggregate-kind detections during another truth event
    false_alerts: int = 0
    recall: float | None = None
    ppv: float | None = None
    delay_median_s: float | None = None  # beyond the rule's own duration
    delay_p95_s: float | None = None


@dataclass
class EvalReport:
    kinds: dict[str, KindReport]
    resident_days: float
    recall_high_critical: float | None
    ppv: float | None
    false_alerts_per_resident_day: float  # medium or higher severity
    delay_median_s: float | None
    delay_p95_s: float | None
    missed: list[dict[str, Any]] = field(default_factory=list)
    false: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table for the terminal."""
        head = f"{'kind':<20}{'truth':>6}{'found':>6}{'alerts':>7}{'false':>6}" \
               f"{'recall':>8}{'PPV':>7}{'med s':>8}{'p95 s':>8}"
        lines = [head, "-" * len(head)]
        for k in sorted(self.kinds):
            r = self.kinds[k]
            lines.append(f"{k:<20}{r.truth:>6}{r.detected:>6}{r.alerts:>7}{r.false_alerts:>6}"
                         f"{_f(r.recall, 3):>8}{_f(r.ppv, 3):>7}{_f(r.delay_median_s, 0):>8}"
                         f"{_f(r.delay_p95_s, 0):>8}")
        lines.append("-" * len(head))
        lines.append(f"recall (critical+high) {_f(self.recall_high_critical, 3)}   "
                     f"PPV {_f(self.ppv, 3)}   delay beyond rule median "
                     f"{_f(self.delay_median_s, 0)} s, p95 {_f(self.delay_p95_s, 0)} s")
        lines.append(f"false alerts (medium+) per resident-day "
                     f"{self.false_alerts_per_resident_day:.3f} over {self.resident_days:.1f} "
                     f"resident-days")
        return "\n".join(lines)


def _f(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def alerts_from_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detections: an alert's opening, and every later event on which its condition became
    active again (an open alert absorbs new findings of its kind: the contract's dedup), each
    at the time it happened, with the alert's severity then."""
    last_active: dict[str, bool] = {}
    out: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        aid = str(ev.get("alert_id") or f"{ev.get('resident_id')}/{ev.get('kind')}/"
                                         f"{ev.get('opened_at', i)}")
        active = bool(ev.get("condition_active", True))
        first = aid not in last_active
        if first or (active and not last_active[aid]):
            at = float(ev.get("opened_at", 0.0)) if first else float(
                ev.get("updated_at", ev.get("opened_at", 0.0)))
            out.append({"alert_id": f"{aid}#{len(out)}", "resident_id": ev.get("resident_id"),
                        "kind": ev.get("kind"), "opened_at": at,
                        "severity": str(ev.get("severity", "low"))})
        last_active[aid] = active
    return sorted(out, key=lambda a: (a["opened_at"], a["alert_id"]))


def _window(t: dict[str, Any], early_s: float, grace_s: float) -> tuple[float, float]:
    lo = float(t["start"]) - early_s
    if t.get("ramp_start") is not None:
        lo = min(lo, float(t["ramp_start"]))
    return lo, float(t["end"]) + grace_s


def score(events: list[dict[str, Any]], truth: list[dict[str, Any]], resident_days: float,
          grace_s: float = 600.0, early_s: float = 120.0,
          kinds: set[str] | None = None, until: float | None = None,
          secondary_kinds: frozenset[str] = SECONDARY_KINDS) -> EvalReport:
    """Match detections to truth and summarise. `kinds` limits the report (default: all
    seen); `until` drops detections after it (the end of the recorded data: a recording
    that stops is not a fleet going offline)."""
    alerts = alerts_from_events(events)
    if until is not None:
        alerts = [a for a in alerts if a["opened_at"] <= until]
    if kinds is not None:
        alerts = [a for a in alerts if a["kind"] in kinds]
        truth = [t for t in truth if t["kind"] in kinds]
    reports: dict[str, KindReport] = {}
    by_key: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for a in alerts:
        by_key.setdefault((a["resident_id"], a["kind"]), []).append(a)
    matched_alerts: set[str] = set()
    delays: dict[str, list[float]] = {}
    missed: list[dict[str, Any]] = []
    hc_total = hc_found = 0
    for t in truth:
        kind = t["kind"]
        rep = reports.setdefault(kind, KindReport(kind))
        lo, hi = _window(t, early_s, grace_s)
        hits = [a for a in by_key.get((t["resident_id"], kind), []) if lo <= a["opened_at"] <= hi]
        for a in hits:
            matched_alerts.add(a["alert_id"])
        if t.get("primary", True) is False:
            continue
        rep.truth += 1
        high = SEVERITY_RANK.get(str(t.get("severity", "high")), 3) >= 3
        hc_total += high
        if hits:
            rep.detected += 1
            hc_found += high
            first = min(a["opened_at"] for a in hits)
            delays.setdefault(kind, []).append(
                first - float(t["start"]) - rule_duration(kind, t.get("severity")))
        else:
            missed.append(t)
    # Aggregate kinds (NEWS2, baseline) follow from any physiological event: during one of
    # the resident's truth events they are secondary, not false.
    spans: dict[Any, list[tuple[float, float]]] = {}
    for t in truth:
        spans.setdefault(t["resident_id"], []).append(_window(t, early_s, grace_s))
    false: list[dict[str, Any]] = []
    for a in alerts:
        rep = reports.setdefault(a["kind"], KindReport(a["kind"]))
        rep.alerts += 1
        if a["alert_id"] in matched_alerts:
            rep.true_alerts += 1
        elif a["kind"] in secondary_kinds and any(
                lo <= a["opened_at"] <= hi for lo, hi in spans.get(a["resident_id"], [])):
            rep.true_alerts += 1
            rep.secondary += 1
        else:
            rep.false_alerts += 1
            false.append(a)
    all_delays: list[float] = []
    for kind, rep in reports.items():
        rep.recall = rep.detected / rep.truth if rep.truth else None
        rep.ppv = rep.true_alerts / rep.alerts if rep.alerts else None
        d = delays.get(kind, [])
        all_delays += d
        if d:
            rep.delay_median_s = float(np.median(d))
            rep.delay_p95_s = float(np.percentile(d, 95))
    n_alerts = len(alerts)
    false_medium = sum(1 for a in false if SEVERITY_RANK.get(a["severity"], 0) >= 2)
    return EvalReport(
        kinds=reports, resident_days=resident_days,
        recall_high_critical=hc_found / hc_total if hc_total else None,
        ppv=(n_alerts - len(false)) / n_alerts if n_alerts else None,
        false_alerts_per_resident_day=false_medium / resident_days if resident_days > 0 else 0.0,
        delay_median_s=float(np.median(all_delays)) if all_delays else None,
        delay_p95_s=float(np.percentile(all_delays, 95)) if all_delays else None,
        missed=missed, false=false)
