"""Settings of the routine scheduler ("four ones"): when each routine's task is issued and
due, per deployment and per town, and the daily monitoring check's thresholds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from config.strict import HHMM_PATTERN, Strict


class RoutineRule(Strict):
    """When one routine's task is issued and when it is due (local time).

    `weekday` (ISO 1..7) applies to weekly routines, `day` (1..31, clamped to the month's
    last day) to monthly ones. A task is due `due_days` after its issue date at `due_time`,
    escalates to the next tier every `escalate_after_h` once overdue, and is missed when
    the next period's task is issued."""

    enabled: bool = True
    time: str = Field("08:00", pattern=HHMM_PATTERN)
    weekday: int = Field(1, ge=1, le=7)
    day: int = Field(1, ge=1, le=31)
    due_days: int = Field(0, ge=0, le=31)
    due_time: str = Field("18:00", pattern=HHMM_PATTERN)
    escalate_after_h: float = Field(24.0, gt=0)



_SHORTEST_PERIOD_DAYS = {"daily_check": 1, "weekly_call": 7, "monthly_inspection": 28,
                         "monthly_visit": 28}


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _rule(**kw: Any) -> Any:
    return Field(default_factory=lambda: RoutineRule(**kw))


_DEFAULTS: dict[str, dict[str, Any]] = {
    "daily_check": {"time": "08:00", "due_days": 0, "due_time": "18:00",
                    "escalate_after_h": 4.0},
    "weekly_call": {"time": "09:00", "weekday": 1, "due_days": 4, "due_time": "18:00"},
    "monthly_inspection": {"time": "08:00", "day": 1, "due_days": 19, "due_time": "18:00"},
    "monthly_visit": {"time": "08:00", "day": 1, "due_days": 24, "due_time": "18:00"},
}


class RoutineRules(Strict):
    """The four routines ("four ones"); a town may override any of them."""

    daily_check: RoutineRule = _rule(**_DEFAULTS["daily_check"])
    weekly_call: RoutineRule = _rule(**_DEFAULTS["weekly_call"])
    monthly_inspection: RoutineRule = _rule(**_DEFAULTS["monthly_inspection"])
    monthly_visit: RoutineRule = _rule(**_DEFAULTS["monthly_visit"])


class DailyCheckThresholds(Strict):
    """Daily monitoring check: data completeness and worn share below these need a look."""

    ok_completeness: float = Field(0.9, ge=0, le=1)
    action_completeness: float = Field(0.5, ge=0, le=1)
    ok_worn: float = Field(0.8, ge=0, le=1)
    offline_gap_min: int = Field(10, ge=1, description="no data this long is an offline period")
    long_offline_min: int = Field(60, ge=1, description="an offline period this long: attention")


class RoutineSettings(Strict):
    """Routine scheduler ("four ones") and its task store."""

    enabled: bool = True
    db_file: str = Field("routines.db", description="SQLite file inside storage.data_dir")
    poll_s: float = Field(30.0, gt=0, le=3600, description="live scheduler wake-up interval")
    max_tier: Literal[2, 3, 4] = Field(3, description="overdue tasks escalate up to this tier")
    rules: RoutineRules = Field(default_factory=RoutineRules)
    towns: dict[str, RoutineRules] = Field(default_factory=dict,
                                           description="per-town schedules (whole rule set)")
    daily_check: DailyCheckThresholds = Field(default_factory=DailyCheckThresholds)

    @field_validator("rules", mode="before")
    @classmethod
    def _over_own_defaults(cls, data: Any) -> Any:
        """A routine given in part keeps its own defaults for the rest: `weekly_call:
        {weekday: 3}` is still issued at 09:00 and due 4 days later, not at the generic
        08:00 and due the same day. (A town's rules are fields over these.)"""
        if not isinstance(data, dict):
            return data
        return {kind: ({**_DEFAULTS[kind], **given}
                       if kind in _DEFAULTS and isinstance(given, dict) else given)
                for kind, given in data.items()}

    def rules_for(self, town: str) -> RoutineRules:
        """The deployment's rules with the town's explicitly set fields on top."""
        over = self.towns.get(town)
        if over is None:
            return self.rules
        merged: dict[str, RoutineRule] = {}
        for kind in RoutineRules.model_fields:
            base: RoutineRule = getattr(self.rules, kind)
            if kind not in over.model_fields_set:
                merged[kind] = base
                continue
            o: RoutineRule = getattr(over, kind)
            merged[kind] = base.model_copy(update={f: getattr(o, f) for f in o.model_fields_set})
        return RoutineRules(**merged)

    @model_validator(mode="after")
    def _due_after_issue(self) -> RoutineSettings:
        # checked on the rules in force (a town's fields over the deployment's): a task due
        # before it is issued would escalate the moment it is issued
        for where, rules in [("rules", self.rules),
                             *((f"towns.{t}", self.rules_for(t)) for t in self.towns)]:
            for kind in RoutineRules.model_fields:
                r: RoutineRule = getattr(rules, kind)
                if r.due_days == 0 and r.due_time <= r.time:
                    raise ValueError(
                        f"{where}.{kind}: due_time {r.due_time} must be after time {r.time} "
                        "when due_days is 0 (the task would be due before it is issued)")
                # and due before the period closes (the next period's task is issued): a
                # task missed before it is due cannot be done at all. Months: February's 28
                days = _SHORTEST_PERIOD_DAYS[kind]
                if r.due_days * 1440 + _minutes(r.due_time) >= days * 1440 + _minutes(r.time):
                    raise ValueError(
                        f"{where}.{kind}: due {r.due_days} days after issue at {r.due_time} "
                        f"falls after the period closes ({days} days after issue at "
                        f"{r.time}, when the next one is issued); expected an earlier due")
        return self
