"""Who is on duty for a resident at a tier, now: rosters first, the staff registry otherwise.

Rules (documented in docs/alert-commands.md, "Routing"):
- A staff member or roster is in scope for a resident when its `town` (if set) is the
  resident's town and its `institution` (if set) is the resident's institution (or, for a
  resident without one, an institution that serves the resident's town).
- Tier 1 prefers the resident's assigned carer (`residents[].staff`).
- If rosters exist for the tier and the resident's scope, the people on duty are those in
  the shifts covering the local time; otherwise every in-scope staff member of the tier is
  taken to be on duty (a 24-hour desk).
- A tier for which the deployment configures nobody at all (no staff, no roster of that
  tier) is served by the monitoring console alone and keeps its normal escalation time;
  a configured tier with nobody on duty for this resident now is *empty*: the alert
  escalates past it at once and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from config.models import Config, Resident, Roster, Shift, Staff


@dataclass(frozen=True)
class Duty:
    """The outcome of routing one alert at one tier."""

    staff: tuple[str, ...]  # on duty now, in registry order
    configured: bool  # False: the deployment routes this tier to the console only

    @property
    def empty(self) -> bool:
        return self.configured and not self.staff


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def shift_covers(shift: Shift, weekday: int, minute: int) -> bool:
    """Does the shift cover local ISO `weekday` (1..7) at `minute` of the day?"""
    start, end = _minutes(shift.start), _minutes(shift.end)
    days = set(shift.days)
    if start <= end:
        return start <= minute < end and (not days or weekday in days)
    # Crosses midnight: the part after midnight belongs to the previous day's shift.
    if minute >= start:
        return not days or weekday in days
    previous = 7 if weekday == 1 else weekday - 1
    return minute < end and (not days or previous in days)


class Router:
    """Routes alerts to people; pure over (config, resident, tier, time)."""

    def __init__(self, config: Config) -> None:
        self.tz = ZoneInfo(config.timezone)
        self.residents: dict[str, Resident] = {r.id: r for r in config.residents}
        self.staff: dict[str, Staff] = {s.id: s for s in config.staff}
        self._inst_towns = {i.id: set(i.towns) for i in config.institutions}
        self._staff_by_tier: dict[int, list[Staff]] = {k: [] for k in (1, 2, 3, 4)}
        for s in config.staff:
            self._staff_by_tier[s.tier].append(s)
        self._rosters_by_tier: dict[int, list[Roster]] = {k: [] for k in (1, 2, 3, 4)}
        for r in config.rosters:
            self._rosters_by_tier[r.tier].append(r)
        self._static: dict[tuple[str, int], tuple[str, ...]] = {}

    def _in_scope(self, town: str | None, institution: str | None, resident: Resident) -> bool:
        if town is not None and town != resident.town:
            return False
        if institution is None:
            return True
        if resident.institution is not None:
            return institution == resident.institution
        return resident.town in self._inst_towns.get(institution, set())

    def _registry_duty(self, resident: Resident, tier: int) -> tuple[str, ...]:
        key = (resident.id, tier)
        if key not in self._static:
            if tier == 1 and resident.staff is not None:
                found: tuple[str, ...] = (resident.staff,)
            else:
                found = tuple(s.id for s in self._staff_by_tier[tier]
                              if self._in_scope(s.town, s.institution, resident))
            self._static[key] = found
        return self._static[key]

    def on_duty(self, resident_id: str, tier: int, now: float) -> Duty:
        """Who is on duty for this resident at this tier at time `now`."""
        configured = bool(self._staff_by_tier[tier] or self._rosters_by_tier[tier])
        resident = self.residents.get(resident_id)
        if resident is None or not configured:
            return Duty((), configured and resident is not None)
        rosters = [r for r in self._rosters_by_tier[tier]
                   if self._in_scope(r.town, r.institution, resident)]
        if not rosters:
            return Duty(self._registry_duty(resident, tier), True)
        local = datetime.fromtimestamp(now, self.tz)
        weekday, minute = local.isoweekday(), local.hour * 60 + local.minute
        seen: dict[str, None] = {}
        for roster in rosters:
            for shift in roster.shifts:
                if shift_covers(shift, weekday, minute):
                    for sid in shift.staff:
                        seen.setdefault(sid, None)
        return Duty(tuple(seen), True)

    def webhooks(self, staff_ids: tuple[str, ...]) -> list[tuple[str, str]]:
        """(staff id, URL) for those with a webhook contact channel."""
        out = []
        for sid in staff_ids:
            s = self.staff.get(sid)
            if s is not None and s.webhook:
                out.append((sid, s.webhook))
        return out
