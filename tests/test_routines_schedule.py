"""A month of routines on the simulated clock: exactly the expected tasks, restart-safe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from carewatch.clock import SimClock
from config.models import Config
from routines.model import TaskError
from routines.schedule import issues_between, merged_rules
from tests.routines_helpers import TZ, local, make_routines, registry, run_until

START = local(2026, 11, 1)  # a Sunday
END = local(2026, 12, 1)


def expected_ids() -> set[str]:
    """Hand-listed: what November 2026 must produce when the service starts on Nov 1 00:00."""
    out = set()
    gufu, lishi = ["r-1", "r-2", "r-3"], ["r-4"]
    for r in gufu + lishi:
        out |= {f"daily_check:{r}:2026-11-{d:02d}" for d in range(1, 31)}
        # The running month (October, issued Oct 1) is issued at the first start, then November.
        out |= {f"monthly_inspection:{r}:2026-{m}" for m in ("10", "11")}
        out |= {f"monthly_visit:{r}:2026-{m}" for m in ("10", "11")}
    for r in gufu:  # Mondays 09:00: the running week W44 (Oct 26), then Nov 2, 9, 16, 23, 30
        out |= {f"weekly_call:{r}:2026-W{w}" for w in range(44, 50)}
    for r in lishi:  # Wednesdays: W44 (Oct 28), then Nov 4, 11, 18, 25
        out |= {f"weekly_call:{r}:2026-W{w}" for w in range(44, 49)}
    return out


def test_issue_times_follow_the_rules() -> None:
    config = registry()
    rules = merged_rules(config, "lishi")
    assert rules.weekly_call.weekday == 3 and rules.weekly_call.time == "09:00"
    weekly = issues_between("weekly_call", rules.weekly_call, TZ, START, END)
    assert [i.period for i in weekly] == ["2026-W45", "2026-W46", "2026-W47", "2026-W48"]
    assert weekly[0].issued_at == local(2026, 11, 4, 9)
    assert weekly[0].due_at == local(2026, 11, 8, 18)  # due_days 4 at 18:00
    assert weekly[0].closes_at == local(2026, 11, 11, 9)
    monthly = issues_between("monthly_visit", rules.monthly_visit, TZ, START, END)
    assert [(i.period, i.issued_at, i.due_at, i.closes_at) for i in monthly] == [
        ("2026-11", local(2026, 11, 1, 8), local(2026, 11, 25, 18), local(2026, 12, 1, 8))]


def test_day_of_month_is_clamped_and_towns_override_only_what_they_set() -> None:
    config = registry(routines={
        "rules": {"monthly_inspection": {"day": 31, "time": "07:30"}},
        "towns": {"lishi": {"monthly_inspection": {"time": "10:00"}}}})
    gufu, lishi = merged_rules(config, "gufu"), merged_rules(config, "lishi")
    feb = issues_between("monthly_inspection", gufu.monthly_inspection, TZ,
                         local(2027, 2, 1), local(2027, 3, 1))
    assert [i.issued_at for i in feb] == [local(2027, 2, 28, 7, 30)]
    assert lishi.monthly_inspection.day == 31 and lishi.monthly_inspection.time == "10:00"


def test_month_of_routines_produces_exactly_the_expected_tasks(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        routines.tick(START)
        run_until(routines, clock, END)
        tasks = routines.tasks()
        ids = [t.task_id for t in tasks]
        assert len(ids) == len(set(ids))
        assert set(ids) == expected_ids()
        created = Counter(e["task_id"] for e in routines.log() if e["action"] == "created")
        assert set(created.values()) == {1}
        # Nothing was done: every task whose period closed by Dec 1 is missed, and the
        # daily checks (no data source: "not monitored") were never ok on their own.
        for t in tasks:
            assert t.state == ("missed" if t.closes_at <= END else "open"), t.task_id
        w45 = routines.get("weekly_call:r-1:2026-W45")
        assert (w45.issued_at, w45.owner, w45.institution_id) == (
            local(2026, 11, 2, 9), "s1", "inst-a")
    finally:
        routines.close()


def _month_with_restart(tmp_path: Path, stop_at: float | None,
                        resume_at: float | None) -> list[tuple[str, float, str, int]]:
    config = registry()
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    routines.tick(START)
    if stop_at is not None and resume_at is not None:
        run_until(routines, clock, stop_at, 1800.0)
        routines.close()
        clock.set(resume_at)  # the service was down in between
        routines, _ = make_routines(config, clock, tmp_path)
        routines.tick(resume_at)
    run_until(routines, clock, END, 1800.0)
    out = [(t.task_id, t.issued_at, t.state, t.tier) for t in routines.tasks()]
    created = Counter(e["task_id"] for e in routines.log() if e["action"] == "created")
    assert set(created.values()) == {1}
    routines.close()
    return out


def test_restart_mid_month_neither_skips_nor_duplicates(tmp_path: Path) -> None:
    straight = _month_with_restart(tmp_path / "a", None, None)
    quick = _month_with_restart(tmp_path / "b", local(2026, 11, 15, 12, 10),
                                local(2026, 11, 15, 12, 40))
    # Down across two daily checks, a Monday's weekly calls and a Wednesday's call.
    long = _month_with_restart(tmp_path / "c", local(2026, 11, 15, 12, 10),
                               local(2026, 11, 18, 10, 0))
    assert {x[0] for x in straight} == expected_ids()
    assert quick == straight
    assert long == straight


def test_completion_done_late_and_refused_once_missed(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        run_until(routines, clock, local(2026, 11, 3, 10))
        done = routines.complete("weekly_call:r-1:2026-W45", by="s1",
                                 now=local(2026, 11, 3, 10), notes="called, all well")
        assert (done.state, done.completed_by, done.outcome) == ("done", "s1", "ok")
        with pytest.raises(TaskError):
            routines.complete("weekly_call:r-1:2026-W45", by="s1", now=local(2026, 11, 3, 11),
                              notes="again")
        with pytest.raises(TaskError):
            routines.complete("weekly_call:r-2:2026-W45", by="s1", now=local(2026, 11, 3, 11),
                              notes="   ")
        late = routines.complete("weekly_call:r-2:2026-W45", by="s1",
                                 now=local(2026, 11, 7, 9), notes="called on Saturday")
        assert late.state == "late"
        with pytest.raises(TaskError, match="missed"):
            routines.complete("weekly_call:r-3:2026-W45", by="s2",
                              now=local(2026, 11, 9, 9, 30), notes="too late")
        assert routines.get("weekly_call:r-3:2026-W45").state == "missed"
    finally:
        routines.close()


def test_minimal_registry_still_valid_and_disabled_routines_issue_nothing(tmp_path: Path) -> None:
    config = Config.model_validate({"towns": [{"id": "gufu"}], "residents": [
        {"id": "r-1", "town": "gufu", "device": "d-1"}], "routines": {"enabled": False}})
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        run_until(routines, clock, local(2026, 11, 10))
        assert routines.tasks() == []
    finally:
        routines.close()
