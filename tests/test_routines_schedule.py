"""A month of routines on the simulated clock: exactly the expected tasks, restart-safe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from carewatch.clock import SimClock
from config.models import Config
from routines.model import Task, TaskError
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
        # Started on November's issue day, before its issue time: October's task would be
        # due with November's (first_issue), so November's is the first.
        out |= {f"monthly_inspection:{r}:2026-11", f"monthly_visit:{r}:2026-11"}
    # The running week W44 is issued at the start (due Thu Nov 5, before W45's due), then
    for r in gufu:  # Mondays 09:00: Nov 2, 9, 16, 23, 30
        out |= {f"weekly_call:{r}:2026-W{w}" for w in range(44, 50)}
    for r in lishi:  # Wednesdays: Nov 4, 11, 18, 25
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


LATE_START = local(2026, 11, 29, 10)  # a Sunday, the QA report's first start


def test_first_start_late_in_the_period_issues_nothing_back_dated(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(LATE_START)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        routines.tick(LATE_START)
        first = {t.task_id: t for t in routines.tasks()}
        # The running week and month, issued now with the routine's normal lead from the
        # start day (not due 20 / 25 Nov as scheduled from 1 Nov); the close moves with the
        # due, keeping the usual escalation window. Daily checks start with the next one.
        want = {"monthly_inspection": (local(2026, 12, 18, 18), local(2026, 12, 29, 8)),
                "monthly_visit": (local(2026, 12, 23, 18), local(2026, 12, 29, 8)),
                "weekly_call": (local(2026, 12, 3, 18), local(2026, 12, 6, 9))}
        assert sorted(first) == sorted(
            f"{k}:r-{i}:{'2026-W48' if k == 'weekly_call' else '2026-11'}"
            for k in want for i in range(1, 5))
        for t in first.values():
            assert (t.issued_at, t.tier, t.escalations) == (LATE_START, 1, []), t.task_id
            assert (t.due_at, t.closes_at) == want[t.kind], t.task_id
            assert not t.overdue(LATE_START)
        assert routines.overdue(LATE_START) == []
        assert [e["ts"] for e in routines.log() if e["action"] == "created"] == [
            LATE_START] * len(first)
        run_until(routines, clock, local(2027, 1, 2))
        tasks = routines.tasks()
        for t in tasks:  # no change is ever stamped before the task existed
            assert all(e["at"] >= t.issued_at for e in t.escalations), t.task_id
        issued = {t.task_id: t.issued_at for t in tasks}
        assert all(e["ts"] >= issued[e["task_id"]] for e in routines.log())
        insp = routines.get("monthly_inspection:r-1:2026-11")
        assert [(e["tier"], e["at"]) for e in insp.escalations] == [
            (2, local(2026, 12, 18, 18)), (3, local(2026, 12, 19, 18))]
        assert insp.state == "missed"
        # later periods run on the normal schedule
        dec = routines.get("monthly_inspection:r-1:2026-12")
        assert (dec.issued_at, dec.due_at) == (local(2026, 12, 1, 8), local(2026, 12, 20, 18))
        assert routines.get("weekly_call:r-1:2026-W49").issued_at == local(2026, 11, 30, 9)
        assert not [t for t in tasks if t.kind == "daily_check" and t.issued_at < LATE_START]
    finally:
        routines.close()


def test_restart_after_a_first_start_catches_up_at_logical_times(tmp_path: Path) -> None:
    config = registry()
    clock = SimClock(LATE_START)
    routines, _ = make_routines(config, clock, tmp_path)
    routines.tick(LATE_START)
    run_until(routines, clock, local(2026, 12, 2, 12), 1800.0)
    routines.close()
    resume = local(2026, 12, 21, 12)  # down across the first-start tasks' due times
    clock.set(resume)
    routines, _ = make_routines(config, clock, tmp_path)
    try:
        routines.tick(resume)
        # a restart is no first start: the stored tasks keep their times, and what fell
        # due meanwhile happened at its own time, not at the restart
        insp = routines.get("monthly_inspection:r-1:2026-11")
        assert (insp.issued_at, insp.due_at) == (LATE_START, local(2026, 12, 18, 18))
        assert [(e["tier"], e["at"]) for e in insp.escalations] == [
            (2, local(2026, 12, 18, 18)), (3, local(2026, 12, 19, 18))]
        missed = routines.get("weekly_call:r-1:2026-W49")  # issued Nov 30, closed Dec 7
        assert missed.state == "missed"
        w51 = routines.get("weekly_call:r-1:2026-W51")  # issued while down, with its own time
        assert w51.issued_at == local(2026, 12, 14, 9) and w51.state == "missed"
        assert routines.get("daily_check:r-1:2026-12-10").issued_at == local(2026, 12, 10, 8)
        created = Counter(e["task_id"] for e in routines.log() if e["action"] == "created")
        assert set(created.values()) == {1}
    finally:
        routines.close()


def test_escalation_never_precedes_the_issue() -> None:
    # A task due before its issue time (the config refuses such rules: tests/test_config.py)
    # escalates no earlier than its issue: never stamped escalated before it existed.
    task = Task(task_id="weekly_call:r-1:2026-W45", kind="weekly_call", resident_id="r-1",
                town_id="t", institution_id=None, owner=None, period="2026-W45",
                issued_at=local(2026, 11, 2, 9), due_at=local(2026, 11, 2, 8),
                closes_at=local(2026, 11, 9, 9), escalate_after_s=86400.0)
    assert task.escalation_deadline(3) == task.issued_at
    assert task.next_deadline(3) == task.issued_at
