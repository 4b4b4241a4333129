"""Several routines instances on one PostgreSQL task store: a step or a completion that loses
a race to another instance recovers from the stored state (no stale copy kept, nothing
announced twice, nothing lost), every instance follows the tasks the others insert, change
and close, and workers that split the towns only act on their own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carewatch.clock import SimClock
from carewatch.workers import worker_config
from config.models import Config
from routines.model import Task, TaskError
from routines.service import Routines
from routines.store import TaskTxn
from routines.store_pg import PgTaskStore
from tests.routines_helpers import local, make_routines, registry, run_until

pytest_plugins = ["tests.pg_fixture"]

START = local(2026, 11, 1)
CALL = "weekly_call:r-1:2026-W45"  # gufu: issued Mon 2 Nov 09:00, due Fri 6 Nov 18:00
DUE = local(2026, 11, 6, 18)


class RacingStore(PgTaskStore):
    """A real PostgreSQL task store that lets another instance act once in the window
    between this instance's reading and its writing: `race(action, fn)` runs `fn` just
    before the next commit that logs `action`."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self._race: tuple[str, Callable[[], Any]] | None = None
        self.commits = 0

    def race(self, action: str, fn: Callable[[], Any]) -> None:
        self._race = (action, fn)

    def commit(self, txn: TaskTxn) -> list[str]:
        if self._race is not None and any(e[3] == self._race[0] for e in txn.log):
            fn, self._race = self._race[1], None
            fn()
        self.commits += 1
        return super().commit(txn)


class Instances:
    """Routines instances sharing one database, each with its own clock and event list."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn, self.tmp_path = dsn, tmp_path
        self.all: list[Routines] = []
        self.clocks: dict[int, SimClock] = {}
        self.events: dict[int, list[dict[str, Any]]] = {}

    def start(self, config: Config, at: float, alerts: bool = False,
              store: PgTaskStore | None = None) -> Routines:
        clock = SimClock(at)
        r, _engine = make_routines(config, clock, self.tmp_path / f"i{len(self.all)}",
                                   alerts=alerts, store=store or PgTaskStore(self.dsn))
        self.all.append(r)
        self.clocks[id(r)], self.events[id(r)] = clock, []
        r.add_listener(self.events[id(r)].append)
        return r

    def tick(self, r: Routines, now: float) -> list[dict[str, Any]]:
        self.clocks[id(r)].set(now)
        return r.tick(now)

    def run(self, r: Routines, end: float, step_s: float = 3600.0) -> None:
        run_until(r, self.clocks[id(r)], end, step_s)

    def announced(self) -> Counter[tuple[str, str, float]]:
        return Counter((e["task_id"], e["event"], e.get("at", e["issued_at"]))
                       for evs in self.events.values() for e in evs)

    def close(self) -> None:
        for r in self.all:
            r.close()
            if r.alerts is not None:
                r.alerts.close()


@pytest.fixture
def inst(pg_dsn: str, tmp_path: Path) -> Iterator[Instances]:
    group = Instances(pg_dsn, tmp_path)
    yield group
    group.close()


def _alone(config: Config, tmp_path: Path, times: list[float]
           ) -> tuple[list[dict[str, Any]], Counter[tuple[str, str, float]], Counter[Any]]:
    """One instance on SQLite ticking at `times`: stored tasks, log, announcements."""
    clock = SimClock(times[0])
    r, _ = make_routines(config, clock, tmp_path / "alone")
    events: list[dict[str, Any]] = []
    r.add_listener(events.append)
    try:
        for now in times:
            clock.set(now)
            r.tick(now)
        return (_docs(r.tasks()),
                Counter((e["task_id"], e["action"], e["ts"]) for e in r.log()),
                Counter((e["task_id"], e["event"], e.get("at", e["issued_at"]))
                        for e in events))
    finally:
        r.close()


def _hours(start: float, end: float) -> list[float]:
    return [start + 3600.0 * i for i in range(int((end - start) // 3600) + 1)]


def _docs(tasks: list[Task]) -> list[dict[str, Any]]:
    """Task documents by id (an instance lists open tasks by due time, a store by issue)."""
    return [t.to_doc() for t in sorted(tasks, key=lambda t: t.task_id)]


def _stored_open(r: Routines) -> list[dict[str, Any]]:
    return _docs(r.store.open_tasks())


# ---- gap 1: losing an escalation race -----------------------------------------------------
def test_a_step_that_loses_the_race_keeps_no_stale_copy_and_loses_nothing(
        inst: Instances, tmp_path: Path) -> None:
    """Both hold the W45 calls; at Monday 09:00 A stores the W46 calls and the W45 misses
    while B is about to store the same: B's commit is refused, B reloads and decides again
    (nothing left to do), and takes the new tasks from the store."""
    config = registry()
    monday = local(2026, 11, 9, 9)
    a = inst.start(config, START)
    inst.tick(a, START)
    inst.run(a, monday - 1800)
    racing = RacingStore(inst.dsn)
    b = inst.start(config, monday - 1800, store=racing)
    assert _docs(b.open_tasks()) == _docs(a.open_tasks())
    racing.race("missed", lambda: inst.tick(a, monday))
    assert inst.tick(b, monday) == []  # A announced all of it
    assert racing.commits == 2  # refused once, then stored B's watermark only
    stored = _stored_open(b)
    assert _docs(b.open_tasks()) == stored
    assert {"weekly_call:r-1:2026-W46", "weekly_call:r-3:2026-W46"} <= {
        d["task_id"] for d in stored}
    a.close()
    inst.run(b, local(2026, 11, 16, 10))  # B alone from here: escalates W46, misses it
    tasks, log, announced = _alone(config, tmp_path, _hours(START, local(2026, 11, 16, 10)))
    assert _docs(b.tasks()) == tasks
    got = Counter((e["task_id"], e["action"], e["ts"]) for e in b.log())
    assert got == log and set(got.values()) == {1}
    assert inst.announced() == announced and set(announced.values()) == {1}


def test_a_refused_step_is_retried_for_the_tasks_nobody_else_changed(
        inst: Instances) -> None:
    """A completes one call while B escalates all of them: B's retry escalates the others."""
    config = registry()
    a = inst.start(config, START)
    inst.tick(a, START)
    inst.run(a, DUE - 3600)
    racing = RacingStore(inst.dsn)
    b = inst.start(config, DUE - 3600, store=racing)
    racing.race("escalated", lambda: a.complete(CALL, by="s1", now=DUE - 1800, notes="ok"))
    docs = inst.tick(b, DUE)
    escalated = sorted(d["task_id"] for d in docs if d["event"] == "escalated")
    # also the running week's calls issued at the first start (Sun 1 Nov, due Thu 5 Nov
    # 18:00), which reach the town office (tier 3) a day later, at DUE
    assert escalated == sorted(["weekly_call:r-2:2026-W45", "weekly_call:r-3:2026-W45"]
                               + [f"weekly_call:r-{i}:2026-W44" for i in range(1, 5)]
                               + [f"daily_check:r-{i}:2026-11-06" for i in range(1, 5)])
    done = b.get(CALL)
    assert (done.state, done.tier, done.completed_by) == ("done", 1, "s1")
    assert [e["action"] for e in b.log(CALL)] == ["created", "completed"]
    assert _docs(b.open_tasks()) == _stored_open(b)
    assert all(t.tier == (3 if t.period == "2026-W44" else 2)
               for t in b.open_tasks() if t.due_at <= DUE)
    assert inst.tick(a, DUE) == []  # A follows: nothing left for it to announce
    assert _docs(a.open_tasks()) == _docs(b.open_tasks())
    assert set(inst.announced().values()) == {1}


# ---- gap 2: losing a completion race ------------------------------------------------------
def test_a_refused_completion_drops_its_copy_and_opens_no_hazard_alert(
        inst: Instances) -> None:
    config = registry()
    now = local(2026, 11, 3, 10)
    a = inst.start(config, START)
    inst.run(a, now)
    racing = RacingStore(inst.dsn)
    b = inst.start(config, now, alerts=True, store=racing)
    racing.race("completed", lambda: a.complete(CALL, by="s2", now=now, notes="called"))
    with pytest.raises(TaskError, match=f"task {CALL} is already done"):
        b.complete(CALL, by="s1", now=now, notes="handrail loose", hazard="loose handrail")
    assert CALL not in {t.task_id for t in b.open_tasks()}
    assert b.alerts is not None and b.alerts.open_alerts() == []
    assert b.store.meta_prefix("hazard_alert:") == {}
    assert [(e["action"], e["actor"]) for e in b.log(CALL)] == [
        ("created", "system"), ("completed", "s2")]
    assert [e["event"] for e in inst.events[id(b)] if e["task_id"] == CALL] == []


def test_a_completion_refused_for_an_escalation_elsewhere_is_stored_on_retry(
        inst: Instances) -> None:
    config = registry()
    a = inst.start(config, START)
    inst.run(a, DUE - 3600)
    racing = RacingStore(inst.dsn)
    b = inst.start(config, DUE - 3600, store=racing)
    racing.race("completed", lambda: inst.tick(a, DUE))  # A's clock runs ahead
    t = b.complete(CALL, by="s1", now=DUE - 60, notes="called at last")
    assert (t.state, t.tier, t.completed_by) == ("done", 2, "s1")
    assert b.get(CALL) == t
    assert [(e["action"], e["detail"].get("tier")) for e in b.log(CALL)] == [
        ("created", None), ("escalated", 2), ("completed", 2)]
    assert CALL not in {x.task_id for x in b.open_tasks()}


# ---- gap 3: following the other instances -------------------------------------------------
def test_an_instance_follows_what_the_others_store_and_carries_on_alone(
        inst: Instances, tmp_path: Path) -> None:
    """B starts with an empty store beside A; both tick each hour, A first, so A issues and
    escalates everything while B only follows. A stops on Tuesday; B escalates and misses the
    tasks A inserted, each once."""
    config = registry()
    a, b = inst.start(config, START), inst.start(config, START)
    stop = local(2026, 11, 3, 10)
    for now in _hours(START, stop):
        inst.tick(a, now)
        assert inst.tick(b, now) == []
    assert len(b.open_tasks()) > 10
    assert _docs(b.open_tasks()) == _docs(a.open_tasks()) == _stored_open(a)
    a.close()
    end = local(2026, 11, 17, 10)
    inst.run(b, end)
    tasks, log, announced = _alone(config, tmp_path, _hours(START, end))
    assert _docs(b.tasks()) == tasks
    got = Counter((e["task_id"], e["action"], e["ts"]) for e in b.log())
    assert got == log and set(got.values()) == {1}
    assert {"escalated", "missed"} <= {action for _t, action, _ts in got}
    assert inst.announced() == announced and set(announced.values()) == {1}


def test_workers_that_split_the_towns_act_on_their_own_towns_only(
        inst: Instances, tmp_path: Path) -> None:
    """A first instance ran the whole registry for two days; then two workers share the
    database, one town each (carewatch run --workers): each holds and escalates its own
    towns' tasks with its own routing, as one instance would have."""
    config = registry()
    first = inst.start(config, START)
    inst.tick(first, START)
    handover = local(2026, 11, 3, 10)
    inst.run(first, handover)
    first.close()
    gufu = inst.start(worker_config(config, ["gufu"]), handover)
    lishi = inst.start(worker_config(config, ["lishi"]), handover)
    assert {t.town_id for t in gufu.open_tasks()} == {"gufu"}
    assert {t.town_id for t in lishi.open_tasks()} == {"lishi"}
    end = local(2026, 11, 12, 10)
    for now in _hours(handover + 3600, end):
        inst.tick(gufu, now)
        inst.tick(lishi, now)
    tasks, log, _announced = _alone(config, tmp_path, _hours(START, end))
    assert _docs(gufu.tasks()) == tasks
    assert Counter((e["task_id"], e["action"], e["ts"]) for e in gufu.log()) == log
    assert {t.town_id for t in gufu.open_tasks()} == {"gufu"}
    assert {e["town_id"] for e in inst.events[id(lishi)]} == {"lishi"}



def test_a_store_created_before_change_tracking_is_followed_too(pg_dsn: str) -> None:
    """A database created by the first PgTaskStore (no changed_xid column) gains it on
    start; its rows are then reported by the first refresh of an instance."""
    import psycopg

    from routines.store_pg import _row

    old = _task_for_migration()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE routine_tasks (task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                     "resident_id TEXT NOT NULL, town_id TEXT NOT NULL, state TEXT NOT NULL, "
                     "issued_at DOUBLE PRECISION NOT NULL, doc JSON NOT NULL, "
                     "version BIGINT NOT NULL DEFAULT 1)")
        conn.execute("INSERT INTO routine_tasks(task_id, kind, resident_id, town_id, state, "
                     "issued_at, doc) VALUES (%s,%s,%s,%s,%s,%s,%s::json)", _row(old))
    store = PgTaskStore(pg_dsn)
    try:
        rows, cursor = store.changes_since(0, ["gufu"])
        assert rows == [(old.task_id, "open", 1)] and cursor > 0
        assert store.open_tasks_in(["gufu"]) == [old] and store.open_tasks_in(["lishi"]) == []
        assert store.changes_since(cursor, ["gufu"])[0] == []  # nothing written since
        done = store.get_many([old.task_id])[0]
        done.state = "done"
        store.commit(TaskTxn(changed=[done]))
        assert store.changes_since(cursor, ["gufu"])[0] == [(old.task_id, "done", 2)]
    finally:
        store.close()


def _task_for_migration() -> Task:
    t0 = local(2026, 11, 2, 9)
    return Task(task_id="weekly_call:r-1:2026-W45", kind="weekly_call", resident_id="r-1",
                town_id="gufu", institution_id="inst-a", owner="s1", period="2026-W45",
                issued_at=t0, due_at=t0 + 86400.0, closes_at=t0 + 7 * 86400.0,
                escalate_after_s=86400.0, tier_reached_at=t0, on_duty=["s1"])
