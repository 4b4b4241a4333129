"""Supervision reports (daily and monthly, per town and for the district) as JSON-ready dicts.

`build_report` is a pure function of the stores' contents and the period: alerts opened in
the period (with the time each reached each tier), routine tasks issued in it, and the
registry. Definitions (also in docs/routines.md):
- time to acknowledge / resolve: from opening to the acknowledgement / resolution, grouped
  by the tier the alert was at when acknowledged; median and p90 (numpy linear percentile);
- acknowledged within the tier's time: of the alerts that reached a tier (and either were
  acknowledged or had their tier time run out by `as_of`), the share acknowledged within
  that tier's acknowledgement time counted from reaching it;
- escalations reaching a tier: alerts that reached tier 2, 3, 4;
- residents monitored: residents with any data in the period's daily checks; each check
  covers the 24 h before it runs, so a period with no check yet (a day before its check
  time, or the day the service started) has no figure: null, `monitoring_state` says why;
- data completeness: received / expected minutes summed over the period's daily checks;
- routines: tasks issued in the period by final state (done on time, late, missed, open),
  with the registry names of the institutions and staff listed (`routines.names`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np

from alerts.model import DEFAULT_ACK_TIMEOUT_S, SEVERITY_NAMES, TIER_NAMES
from config.models import Config
from routines.alertdata import AlertRecord
from routines.model import OUTCOMES, Task
from routines.schedule import KINDS, issues_between, merged_rules


class TaskHistory(Protocol):
    """The tasks a report reads (a task store, or several: `routines.district`)."""

    def tasks(self, *, issued_from: float | None = None, issued_to: float | None = None,
              kind: str | None = None, resident_id: str | None = None,
              town_id: str | None = None) -> list[Task]: ...


class AlertHistory(Protocol):
    """The alerts a report reads (`routines.alertdata.AlertData`, or several)."""

    def opened_between(self, start: float, end: float) -> list[AlertRecord]: ...


TASK_STATES_SHOWN = ("done", "late", "missed", "open")


def period_bounds(kind: str, label: str, tz: ZoneInfo) -> tuple[float, float]:
    """[start, end) epoch seconds of a local day (`2026-11-03`) or month (`2026-11`)."""
    if kind == "month":
        y, m = (int(x) for x in label.split("-"))
        first = date(y, m, 1)
        nxt = date(y + m // 12, m % 12 + 1, 1)
    elif kind == "day":
        first = date.fromisoformat(label)
        nxt = first + timedelta(days=1)
    else:
        raise ValueError(f"report period kind is 'day' or 'month', got {kind!r}")
    start = datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    return start, end


def stats(values: list[float]) -> dict[str, Any]:
    """Count, median and p90 (None when empty), rounded to 0.1 s."""
    if not values:
        return {"n": 0, "median": None, "p90": None}
    arr = np.asarray(values, np.float64)
    return {"n": len(values), "median": round(float(np.median(arr)), 1),
            "p90": round(float(np.percentile(arr, 90)), 1)}


class AckTimes:
    """Acknowledgement time per tier (town setting > deployment setting > contract)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.town = {t.id: dict(t.ack_timeout_s) for t in config.towns}

    def __call__(self, severity: int, town: str) -> float:
        name = SEVERITY_NAMES[severity]
        per_town = self.town.get(town, {})
        if name in per_town:
            return float(per_town[name])
        return float(self.config.ack_timeout_s.get(name, DEFAULT_ACK_TIMEOUT_S[name]))


def alert_section(records: list[AlertRecord], ack_time: AckTimes, as_of: float) -> dict[str, Any]:
    """Alert counts, response times per tier and escalations for these alerts."""
    by_kind = Counter(r.alert.kind for r in records)
    by_sev = Counter(r.alert.severity_name for r in records)
    by_kind_sev: dict[str, dict[str, int]] = defaultdict(dict)
    for (k, s), n in Counter((r.alert.kind, r.alert.severity_name) for r in records).items():
        by_kind_sev[k][s] = n
    ack_s: dict[int, list[float]] = defaultdict(list)
    res_s: dict[int, list[float]] = defaultdict(list)
    reached: Counter[int] = Counter()
    judged: Counter[int] = Counter()
    within: Counter[int] = Counter()
    all_ack, all_res = [], []
    for rec in records:
        a = rec.alert
        acked = a.acked_at if a.acked_at is not None and a.acked_at <= as_of else None
        tier_ack = rec.tier_at(acked) if acked is not None else None
        if acked is not None and tier_ack is not None:
            ack_s[tier_ack].append(acked - a.opened_at)
            all_ack.append(acked - a.opened_at)
            if a.resolved_at is not None and a.resolved_at <= as_of:
                res_s[tier_ack].append(a.resolved_at - a.opened_at)
                all_res.append(a.resolved_at - a.opened_at)
        for tier, at in rec.tier_reached.items():
            if at > as_of:
                continue
            reached[tier] += 1
            limit = at + ack_time(a.severity, a.town_id)
            if acked is not None and at <= acked <= limit:
                judged[tier] += 1
                within[tier] += 1
            elif (acked is not None and acked > limit) or (acked is None and limit <= as_of):
                judged[tier] += 1
    tiers = {}
    for tier in (1, 2, 3, 4):
        tiers[str(tier)] = {
            "tier_name": TIER_NAMES[tier], "reached": reached[tier],
            "acknowledged_here": len(ack_s[tier]),
            "time_to_ack_s": stats(ack_s[tier]), "time_to_resolve_s": stats(res_s[tier]),
            "acked_within_tier_time": (round(within[tier] / judged[tier], 4)
                                       if judged[tier] else None),
            "judged": judged[tier], "within": within[tier],
        }
    return {
        "total": len(records), "by_kind": dict(sorted(by_kind.items())),
        "by_severity": {s: by_sev.get(s, 0) for s in ("critical", "high", "medium", "low")},
        "by_kind_severity": dict(sorted(by_kind_sev.items())),
        "response": {"tiers": tiers, "overall": {"time_to_ack_s": stats(all_ack),
                                                 "time_to_resolve_s": stats(all_res)}},
        "escalations": {str(t): reached[t] for t in (2, 3, 4)},
    }


def _count_states(tasks: list[Task]) -> dict[str, Any]:
    c = Counter(t.state for t in tasks)
    out: dict[str, Any] = {s: c.get(s, 0) for s in TASK_STATES_SHOWN}
    out["total"] = len(tasks)
    closed = out["done"] + out["late"] + out["missed"]
    out["on_time_share"] = round(out["done"] / closed, 4) if closed else None
    # what the completed ones found: a call "done" with the resident not reached is not a
    # resident seen to be well, and supervision must be able to tell
    found = Counter(t.outcome for t in tasks if t.outcome is not None)
    out["outcomes"] = {o: found.get(o, 0) for o in OUTCOMES}
    return out


def routine_section(tasks: list[Task], config: Config | None = None) -> dict[str, Any]:
    """Routines by kind, institution and staff, by state; `names` gives the registry name
    (else the id) of each institution and staff id listed, for readers who are not a
    database ("-": none assigned, no name)."""
    by_inst: dict[str, list[Task]] = defaultdict(list)
    by_staff: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_inst[t.institution_id or "-"].append(t)
        by_staff[t.owner or "-"].append(t)
    inst_names = {i.id: i.name or i.id for i in config.institutions} if config else {}
    staff_names = {s.id: s.name or s.id for s in config.staff} if config else {}
    return {
        "by_kind": {k: _count_states([t for t in tasks if t.kind == k]) for k in KINDS},
        "by_institution": {k: _count_states(v) for k, v in sorted(by_inst.items())},
        "by_staff": {k: _count_states(v) for k, v in sorted(by_staff.items())},
        "hazards_found": sum(1 for t in tasks if t.hazard),
        # per section, not per report: a town-scoped copy then names only its own people
        "names": {"institutions": {k: inst_names.get(k, k) for k in sorted(by_inst) if k != "-"},
                  "staff": {k: staff_names.get(k, k) for k in sorted(by_staff) if k != "-"}},
    }


def next_daily_check(config: Config, towns: list[str], after: float, before: float
                     ) -> float | None:
    """The first daily-check issue instant in (after, before) of any of `towns`, if any."""
    if not config.routines.enabled:
        return None
    tz = ZoneInfo(config.timezone)
    found = [i.issued_at for town in towns
             for i in issues_between("daily_check", merged_rules(config, town).daily_check,
                                     tz, after, before)
             if i.issued_at < before]  # one at `before` is the next period's
    return min(found, default=None)


def monitoring_section(checks: list[Task], registered: int,
                       next_check_at: float | None = None) -> dict[str, Any]:
    """Residents monitored and data completeness from the period's daily checks.

    `next_check_at` is the period's next daily check after the report's time, if one is
    still to run: the figures are then so far, or pending when no check has run yet."""
    results = [t.check for t in checks if t.check is not None]
    if results:
        state = "so_far" if next_check_at is not None else "final"
    else:  # no check ran: "0 monitored" would claim what no check looked at
        state = "pending" if next_check_at is not None else "no_checks"
    expected = sum(int(c["expected_min"]) for c in results)
    received = sum(int(c["received_min"]) for c in results)
    known = [c for c in results if c.get("worn_share") is not None]
    monitored = {t.resident_id for t in checks if t.check and t.check["received_min"] > 0}
    per_check = [float(c["completeness"]) for c in results if c["completeness"] is not None]
    return {
        "residents_registered": registered,
        "residents_monitored": len(monitored) if results else None,
        "monitoring_state": state, "next_check_at": next_check_at,
        "daily_checks": len(results),
        "completeness": round(received / expected, 4) if expected else None,
        "completeness_median_check": (round(float(np.median(per_check)), 4)
                                      if per_check else None),
        "worn_share": (round(sum(c["worn_min"] for c in known)
                             / max(1, sum(int(c["received_min"]) for c in known)), 4)
                       if known else None),
        "offline_periods": sum(int(c["offline_periods"]) for c in results),
        "check_status": {s: sum(1 for c in results if c["status"] == s)
                         for s in ("ok", "attention", "action_needed")},
    }


def _section(config: Config, town: str | None, records: list[AlertRecord], tasks: list[Task],
             ack_time: AckTimes, as_of: float, start: float, end: float) -> dict[str, Any]:
    if town is not None:
        records = [r for r in records if r.alert.town_id == town]
        tasks = [t for t in tasks if t.town_id == town]
    registered = sum(1 for r in config.residents if town is None or r.town == town)
    towns = [town] if town is not None else [t.id for t in config.towns]
    # checks still to run in the period after `as_of` (all of them for a future period)
    nxt = next_daily_check(config, towns, max(as_of, start - 1e-3), end)
    out = monitoring_section([t for t in tasks if t.kind == "daily_check"], registered, nxt)
    out["alerts"] = alert_section(records, ack_time, as_of)
    out["routines"] = routine_section(tasks, config)
    return out


def _daily_series(records: list[AlertRecord], tasks: list[Task], start: float, end: float,
                  tz: ZoneInfo) -> list[dict[str, Any]]:
    days: dict[str, dict[str, Any]] = {}
    day, last = datetime.fromtimestamp(start, tz).date(), datetime.fromtimestamp(end, tz).date()
    while day < last:
        key = day.isoformat()
        days[key] = {"day": key, "alerts": 0, "expected_min": 0, "received_min": 0}
        day += timedelta(days=1)
    for r in records:
        key = datetime.fromtimestamp(r.alert.opened_at, tz).date().isoformat()
        if key in days:
            days[key]["alerts"] += 1
    for task in tasks:
        if task.kind == "daily_check" and task.check is not None:
            key = datetime.fromtimestamp(task.issued_at, tz).date().isoformat()
            if key in days:
                days[key]["expected_min"] += int(task.check["expected_min"])
                days[key]["received_min"] += int(task.check["received_min"])
    for d in days.values():
        d["completeness"] = (round(d["received_min"] / d["expected_min"], 4)
                             if d["expected_min"] else None)
    return list(days.values())


def build_report(config: Config, tasks: TaskHistory, alerts: AlertHistory, kind: str,
                 label: str, as_of: float, towns: list[str] | None = None) -> dict[str, Any]:
    """The supervision report for a local day or month, as of `as_of` (JSON-ready).

    `towns`: only these towns' sections, and a daily series of theirs alone, with no
    district section (what a town office or an institution may read); None: the district.
    """
    tz = ZoneInfo(config.timezone)
    start, end = period_bounds(kind, label, tz)
    records = alerts.opened_between(start, end)
    period_tasks = tasks.tasks(issued_from=start, issued_to=end)
    if towns is not None:
        keep = set(towns)
        records = [r for r in records if r.alert.town_id in keep]
        period_tasks = [t for t in period_tasks if t.town_id in keep]
    ack_time = AckTimes(config)
    names = config.town_names()
    return {
        "report": "supervision", "version": 1,
        "period": {"kind": kind, "label": label, "start": start, "end": end,
                   "timezone": config.timezone, "finished": as_of >= end},
        "as_of": as_of,
        "district": (_section(config, None, records, period_tasks, ack_time, as_of, start, end)
                     if towns is None else None),
        "towns": {t.id: {"name": names[t.id],
                         **_section(config, t.id, records, period_tasks, ack_time, as_of,
                                    start, end)}
                  for t in config.towns if towns is None or t.id in keep},
        "daily": _daily_series(records, period_tasks, start, end, tz),
    }
