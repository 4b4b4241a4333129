"""Shared set-up for the routine tests: a small registry with staff at every tier."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from alerts.engine import AlertEngine
from carewatch.clock import SimClock
from config.models import Config
from ingest.devices import DeviceTable
from ingest.publish import ListPublisher
from routines.schedule import KINDS, first_issue, merged_rules
from routines.service import Routines

TZ = ZoneInfo("Asia/Shanghai")


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    """Epoch seconds of a local (Asia/Shanghai) wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()


def registry(**extra: Any) -> Config:
    """Town gufu: 3 residents, carers s1/s2, institution desk d1, town office t1.
    Town lishi: 1 resident (carer s3), weekly calls on Wednesdays."""
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "towns": [{"id": "gufu"}, {"id": "lishi"}],
        "institutions": [{"id": "inst-a", "towns": ["gufu"]}, {"id": "inst-b", "towns": ["lishi"]}],
        "staff": [
            {"id": "s1", "tier": 1, "town": "gufu", "institution": "inst-a"},
            {"id": "s2", "tier": 1, "town": "gufu", "institution": "inst-a"},
            {"id": "s3", "tier": 1, "town": "lishi", "institution": "inst-b"},
            {"id": "d1", "tier": 2, "institution": "inst-a"},
            {"id": "d2", "tier": 2, "institution": "inst-b"},
            {"id": "t1", "tier": 3, "town": "gufu"},
            {"id": "t2", "tier": 3, "town": "lishi"},
        ],
        "residents": [
            {"id": "r-1", "town": "gufu", "device": "dev-1", "staff": "s1"},
            {"id": "r-2", "town": "gufu", "device": "dev-2", "staff": "s1"},
            {"id": "r-3", "town": "gufu", "device": "dev-3", "staff": "s2"},
            {"id": "r-4", "town": "lishi", "device": "dev-4", "staff": "s3"},
        ],
        "routines": {"towns": {"lishi": {"weekly_call": {"weekday": 3}}}},
    }
    data.update(extra)
    return Config.model_validate(data)


def make_routines(config: Config, clock: SimClock, data_dir: Path, alerts: bool = False,
                  **kw: Any) -> tuple[Routines, AlertEngine | None]:
    devices = DeviceTable.from_config(config)
    engine = None
    if alerts:
        engine = AlertEngine(config, devices, clock, ListPublisher(), data_dir,
                             deterministic_ids=True, send_notifications=False)
    return Routines(config, devices, clock, data_dir, alerts=engine, **kw), engine


def run_until(routines: Routines, clock: SimClock, end: float, step_s: float = 3600.0) -> None:
    """Tick on the simulated clock every `step_s` up to and including `end`."""
    while clock.now() < end:
        clock.set(min(clock.now() + step_s, end))
        routines.tick(clock.now())


def first_start_kinds(config: Config, town: str, start: float) -> set[str]:
    """The routines a first start at `start` issues in `town` (`schedule.first_issue`): it
    depends on the date (a week's calls are not issued on a Monday before their issue time,
    nor a month's tasks on the 1st before theirs), so live tests ask rather than assume."""
    rules, tz = merged_rules(config, town), ZoneInfo(config.timezone)
    return {k for k in KINDS if first_issue(k, getattr(rules, k), tz, start) is not None}
