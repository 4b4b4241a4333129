"""When routine tasks are issued, due and closed: pure functions of (rules, time zone, time).

Every routine period has a key (`2026-11-03` for a day, `2026-W45` for an ISO week, `2026-11`
for a month) and one issue instant per town. "Which tasks are due to exist by now?" is
`issues_between(rule, kind, tz, after, until)`: the issue instants in (after, until]. The
scheduler keeps a durable watermark per kind and asks this question on every wake-up, on
the wall clock and on a simulated one alike; task ids are built from the period key, so
asking twice never makes a task twice. A first start (no watermark) issues the running
period from `first_issue`: at the start, with the routine's normal lead, never back-dated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.models import Config
from config.routine_settings import RoutineRule, RoutineRules

KINDS = ("daily_check", "weekly_call", "monthly_inspection", "monthly_visit")
PERIOD_OF_KIND = {"daily_check": "day", "weekly_call": "week",
                  "monthly_inspection": "month", "monthly_visit": "month"}


@dataclass(frozen=True)
class Issue:
    """One period of one routine in one town."""

    kind: str
    period: str  # period key
    issued_at: float
    due_at: float
    closes_at: float  # the next period's issue: an undone task is missed from then


def _hhmm(value: str) -> time | None:
    if value == "24:00":
        return None
    h, m = value.split(":")
    return time(int(h), int(m))


def _at(day: date, hhmm: str, tz: ZoneInfo) -> float:
    t = _hhmm(hhmm)
    if t is None:
        return datetime.combine(day + timedelta(days=1), time(0, 0), tz).timestamp()
    return datetime.combine(day, t, tz).timestamp()


def _month_day(year: int, month: int, day: int) -> date:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(day, (nxt - timedelta(days=1)).day))


def _add_months(year: int, month: int, k: int) -> tuple[int, int]:
    m = year * 12 + (month - 1) + k
    return m // 12, m % 12 + 1


def issue_day(kind: str, rule: RoutineRule, local: date) -> tuple[str, date]:
    """The period key and issue date of the period containing local date `local`."""
    period = PERIOD_OF_KIND[kind]
    if period == "day":
        return local.isoformat(), local
    if period == "week":
        iso = local.isocalendar()
        monday = local - timedelta(days=iso.weekday - 1)
        return f"{iso.year}-W{iso.week:02d}", monday + timedelta(days=rule.weekday - 1)
    return f"{local.year}-{local.month:02d}", _month_day(local.year, local.month, rule.day)


def _next_period_day(kind: str, local: date) -> date:
    """A date inside the period after the one containing `local`."""
    period = PERIOD_OF_KIND[kind]
    if period == "day":
        return local + timedelta(days=1)
    if period == "week":
        return local + timedelta(days=7)
    y, m = _add_months(local.year, local.month, 1)
    return date(y, m, 1)


def _period_anchor(kind: str, local: date) -> date:
    """The first day of the period containing `local` (used to walk periods)."""
    period = PERIOD_OF_KIND[kind]
    if period == "day":
        return local
    if period == "week":
        return local - timedelta(days=local.isoweekday() - 1)
    return date(local.year, local.month, 1)


def make_issue(kind: str, rule: RoutineRule, tz: ZoneInfo, anchor: date) -> Issue:
    """The issue of the period containing local date `anchor`."""
    key, day = issue_day(kind, rule, anchor)
    _next_key, next_day = issue_day(kind, rule, _next_period_day(kind, anchor))
    return Issue(kind=kind, period=key, issued_at=_at(day, rule.time, tz),
                 due_at=_at(day + timedelta(days=rule.due_days), rule.due_time, tz),
                 closes_at=_at(next_day, rule.time, tz))


def issues_between(kind: str, rule: RoutineRule, tz: ZoneInfo, after: float,
                   until: float) -> list[Issue]:
    """Issues of `kind` whose issue instant lies in (after, until], oldest first."""
    if not rule.enabled or until <= after:
        return []
    # Start one period early: a period's issue instant can fall after the period's first day.
    day = _period_anchor(kind, datetime.fromtimestamp(after, tz).date())
    day = _period_anchor(kind, day - timedelta(days=1))
    out: list[Issue] = []
    while True:
        issue = make_issue(kind, rule, tz, day)
        if issue.issued_at > until:
            return out
        if issue.issued_at > after:
            out.append(issue)
        day = _period_anchor(kind, _next_period_day(kind, day))


def current_issue(kind: str, rule: RoutineRule, tz: ZoneInfo, now: float) -> Issue | None:
    """The latest issue at or before `now` (the period now running), if any."""
    found = issues_between(kind, rule, tz, now - 32 * 86400.0, now)
    return found[-1] if found else None


def first_issue(kind: str, rule: RoutineRule, tz: ZoneInfo, start: float) -> Issue | None:
    """The running period's issue at a first start `start` (no watermark yet), not back-dated.

    Issued at `start`, due no earlier than the routine's normal lead counted from the start
    day (`due_days` later at `due_time`, after `start`) nor than its scheduled due time; its
    close moves by as much as its due did, so the usual escalation window stays before it is
    missed. Nothing for daily checks (no monitored day lies behind the first one), and
    nothing when that due would not come before the next period's own due: the next
    period's task, issued with its full lead, asks for the same by then.
    """
    if PERIOD_OF_KIND[kind] == "day":
        return None
    cur = current_issue(kind, rule, tz, start)
    if cur is None or cur.issued_at >= start:
        return cur
    day = datetime.fromtimestamp(start, tz).date() + timedelta(days=rule.due_days)
    grace = _at(day, rule.due_time, tz)
    while grace <= start:  # due_days 0 and started after due_time: tomorrow's
        day += timedelta(days=1)
        grace = _at(day, rule.due_time, tz)
    nxt = issues_between(kind, rule, tz, start, start + 40 * 86400.0)
    if nxt and grace >= nxt[0].due_at:
        return None
    shift = max(0.0, grace - cur.due_at)
    return replace(cur, issued_at=start, due_at=cur.due_at + shift,
                   closes_at=cur.closes_at + shift)


def merged_rules(config: Config, town: str) -> RoutineRules:
    """The deployment's rules with the town's explicitly set fields on top."""
    return config.routines.rules_for(town)


def task_id(kind: str, resident_id: str, period: str) -> str:
    """Deterministic: one task per (kind, resident, period), however often it is planned."""
    return f"{kind}:{resident_id}:{period}"
