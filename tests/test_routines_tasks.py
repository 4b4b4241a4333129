"""Escalation of overdue tasks, hazards opening alerts, daily checks from the StateStore,
and the live APScheduler wake-up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carewatch.clock import SimClock, WallClock
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore
from routines.service import Routines
from tests.ingest_harness import wait_for
from tests.routines_helpers import first_start_kinds, local, make_routines, registry, run_until

START = local(2026, 11, 1)


def test_overdue_task_escalates_to_institution_then_town(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    events: list[dict[str, Any]] = []
    routines.add_listener(events.append)
    try:
        tid = "weekly_call:r-1:2026-W45"
        due = local(2026, 11, 6, 18)  # Friday 18:00
        run_until(routines, clock, due - 60, 600.0)
        t = routines.get(tid)
        assert (t.state, t.tier, t.owner) == ("open", 1, "s1")
        assert t in routines.my_tasks("s1", clock.now())
        run_until(routines, clock, due, 600.0)
        t = routines.get(tid)
        assert (t.tier, t.on_duty, t.tier_reached_at) == (2, ["d1"], due)
        assert any(x.task_id == tid for x in routines.my_tasks("d1", clock.now()))
        assert any(x.task_id == tid for x in routines.overdue(clock.now()))
        run_until(routines, clock, due + 24 * 3600 - 60, 600.0)
        assert routines.get(tid).tier == 2
        run_until(routines, clock, due + 24 * 3600, 600.0)
        t = routines.get(tid)
        assert (t.tier, t.on_duty) == (3, ["t1"])
        assert [(e["tier"], e["at"]) for e in t.escalations] == [(2, due), (3, due + 86400)]
        # max_tier 3: no further escalation; missed when the next week's call is issued.
        run_until(routines, clock, local(2026, 11, 9, 9), 600.0)
        t = routines.get(tid)
        assert (t.state, t.tier) == ("missed", 3)
        mine = [(e["event"], e.get("tier")) for e in events if e["task_id"] == tid]
        assert mine == [("created", 1), ("escalated", 2), ("escalated", 3), ("missed", 3)]
        log = [(e["action"], e["ts"]) for e in routines.log(tid)]
        assert log == [("created", local(2026, 11, 2, 9)), ("escalated", due),
                       ("escalated", due + 86400), ("missed", local(2026, 11, 9, 9))]
    finally:
        routines.close()


def test_escalation_passes_a_tier_with_nobody_on_duty(tmp_path: Path) -> None:
    # The institution desk works 09:00-17:00 only: a task due at 18:00 goes to the town.
    config = registry(rosters=[{"tier": 2, "institution": "inst-a",
                                "shifts": [{"staff": ["d1"], "start": "09:00", "end": "17:00"}]}])
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        due = local(2026, 11, 6, 18)
        run_until(routines, clock, due, 600.0)
        t = routines.get("weekly_call:r-1:2026-W45")
        assert t.tier == 3 and t.on_duty == ["t1"]
        assert [(e["tier"], e["reason"]) for e in t.escalations] == [
            (2, "overdue"), (3, "no_one_on_duty")]
    finally:
        routines.close()


def test_hazard_found_on_inspection_opens_an_alert(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(START)
    routines, engine = make_routines(config, clock, tmp_path, alerts=True)
    assert engine is not None
    try:
        run_until(routines, clock, local(2026, 11, 5, 10))
        now = clock.now()
        t = routines.complete("monthly_inspection:r-2:2026-11", by="s1", now=now,
                              notes="gas hose cracked; valve closed",
                              hazard="cracked gas hose in the kitchen")
        assert (t.state, t.outcome) == ("done", "hazard_found")
        alerts = engine.open_alerts()
        assert [(a.alert_id, a.resident_id, a.kind, a.severity_name, a.tier) for a in alerts] == [
            (t.alert_id, "r-2", "hazard", "high", 1)]
        assert alerts[0].evidence["task_id"] == t.task_id
        assert engine.events(t.alert_id)[0]["event"] == "opened"
    finally:
        routines.close()
        engine.close()


def _samples(rows: list[int], ts: list[float], worn: list[int]) -> SampleColumns:
    cols = SampleColumns.empty(len(ts))
    cols.row = np.array(rows, np.int32)
    cols.ts = np.array(ts, np.float64)
    cols.hr = np.full(len(ts), 70.0, np.float32)
    cols.worn = np.array(worn, np.int8)
    return cols


def test_daily_check_figures_and_status(tmp_path: Path) -> None:
    config = registry()
    devices = DeviceTable.from_config(config)
    state = StateStore(len(devices))
    t0 = local(2026, 11, 1, 8)  # the service starts; the first check is Nov 2 08:00
    clock = SimClock(t0)
    routines = Routines(config, devices, clock, tmp_path, state=state)
    try:
        routines.tick(t0)
        minutes = np.arange(1440) * 60.0 + t0 + 5
        # r-1 (row 0): every minute, worn. r-2 (row 1): 20 h of data, a 4-hour gap, worn.
        # r-3 (row 2): every minute but worn only half of it. r-4: nothing.
        gap = (minutes >= t0 + 3600 * 10) & (minutes < t0 + 3600 * 14)
        rows = [0] * 1440 + [1] * int((~gap).sum()) + [2] * 1440
        ts = [*minutes, *minutes[~gap], *minutes]
        worn = [1] * 1440 + [1] * int((~gap).sum()) + [1, 0] * 720
        cols = _samples(rows, ts, worn).sorted_by_row_ts()
        state.append(cols, t0 + 86400)
        clock.set(local(2026, 11, 2, 8))
        routines.tick(clock.now())
        checks = {t.resident_id: t for t in routines.tasks(kind="daily_check")}
        c1, c2, c3, c4 = (checks[r].check for r in ("r-1", "r-2", "r-3", "r-4"))
        assert c1 is not None and c2 is not None and c3 is not None and c4 is not None
        assert (c1["expected_min"], c1["received_min"], c1["completeness"]) == (1440, 1440, 1.0)
        assert c1["status"] == "ok" and checks["r-1"].state == "done"
        assert (c2["received_min"], c2["offline_periods"], c2["longest_offline_min"]) == (
            1200, 1, 240)
        assert c2["completeness"] == pytest.approx(1200 / 1440, abs=1e-4)
        assert c2["status"] == "attention" and "long_offline" in c2["reasons"]
        assert checks["r-2"].state == "open"
        assert (c3["worn_min"], c3["worn_share"], c3["status"]) == (720, 0.5, "attention")
        assert (c4["completeness"], c4["status"]) == (0.0, "action_needed")
    finally:
        routines.close()


def test_live_scheduler_issues_tasks_and_stops_cleanly(tmp_path: Path) -> None:
    config = registry(routines={"poll_s": 0.05})
    routines, _ = make_routines(config, SimClock(START), tmp_path)
    routines.close()
    live = Routines(config, DeviceTable.from_config(config), WallClock(), tmp_path / "live")
    try:
        before = threading.active_count()
        now = WallClock().now()
        live.start()
        # The first wake-up issues the running week's and month's tasks (those the date
        # allows: first_start_kinds).
        expected = sum(len(first_start_kinds(config, r.town, now)) for r in config.residents)
        wait_for(lambda: len(live.tasks()) == expected, 10.0, "the running period's tasks")
        assert threading.active_count() > before
    finally:
        live.close()
    # Stopped: the APScheduler thread is joined (the autouse fixture checks for leftovers).
    assert live._scheduler is None


def test_a_routine_switched_on_later_starts_afresh(tmp_path: Path) -> None:
    """Visits off from a January start, switched on in November: the running month's visit
    is issued as at a first start; the months while it was off are not issued now, already
    missed (its watermark stayed at the first start: ten months of missed visits)."""
    off = registry(routines={"rules": {"monthly_visit": {"enabled": False}}})
    clock = SimClock(local(2026, 1, 5, 10))
    routines, _ = make_routines(off, clock, tmp_path)
    routines.tick(clock.now())
    run_until(routines, clock, local(2026, 2, 3, 10), step_s=6 * 3600.0)
    routines.close()
    clock.set(local(2026, 11, 10, 10))
    routines, _ = make_routines(registry(), clock, tmp_path)
    try:
        events = routines.tick(clock.now())
        visits = [e for e in events if e["kind"] == "monthly_visit"]
        assert visits and {e["event"] for e in visits} == {"created"}
        assert {e["task_id"].rsplit(":", 1)[1] for e in visits} == {"2026-11"}
        assert all(e["state"] == "open" for e in visits)
        run_until(routines, clock, local(2026, 12, 2, 10), step_s=6 * 3600.0)  # and on as usual
        ids = {t.task_id for t in routines.store.tasks() if t.kind == "monthly_visit"}
        assert {i.rsplit(":", 1)[1] for i in ids} == {"2026-11", "2026-12"}
    finally:
        routines.close()
