"""Routine tasks on PostgreSQL: the task store contract on both backends, restart from the
shared store, two instances racing on one database, and daily checks and reports reading
the PostgreSQL alert store (storage.alerts_backend: postgresql)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from alerts.engine import AlertEngine
from carewatch.clock import SimClock
from config.models import Config
from ingest.devices import DeviceTable
from ingest.publish import ListPublisher
from routines.alertdata import AlertData
from routines.alertdata_pg import PgAlertData
from routines.model import Task, TaskError
from routines.reports import build_report
from routines.service import Routines
from routines.store import SqliteTaskStore, StaleTaskError, TaskStore, TaskTxn
from routines.store_pg import PgTaskStore
from tests.routines_helpers import local, make_routines, registry, run_until

if TYPE_CHECKING:  # imported by pytest as a plugin (below); importing it here first
    from tests.pg_fixture import PgServer  # would skip its assertion rewriting

pytest_plugins = ["tests.pg_fixture"]

START = local(2026, 11, 1)
END = local(2026, 12, 1)
T0 = local(2026, 11, 2, 9)
StoreFactory = Callable[[], TaskStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens task stores on one SQLite file or one PostgreSQL database (each call: another
    instance, or the same store after a restart); all closed at the end."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    opened: list[TaskStore] = []

    def make() -> TaskStore:
        s: TaskStore = PgTaskStore(dsn) if dsn else SqliteTaskStore(tmp_path / "tasks.db")
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def _task(resident: str, kind: str = "weekly_call", period: str = "2026-W45",
          issued: float = T0, town: str = "gufu") -> Task:
    return Task(task_id=f"{kind}:{resident}:{period}", kind=kind, resident_id=resident,
                town_id=town, institution_id="inst-a", owner="s1", period=period,
                issued_at=issued, due_at=issued + 86400.0, closes_at=issued + 7 * 86400.0,
                escalate_after_s=86400.0, tier_reached_at=issued, on_duty=["s1"],
                check={"status": "ok", "completeness": 0.9375})


def _created(t: Task) -> tuple[float, str, str, str, dict[str, Any]]:
    return (t.issued_at, t.task_id, "system", "created", {"owner": t.owner})


# ---- the TaskStore contract, both backends ------------------------------------------------
def test_commit_inserts_each_id_once_with_its_log_and_watermark(open_store: StoreFactory) -> None:
    store = open_store()
    a, b, c = _task("r-1"), _task("r-2"), _task("r-3")
    assert store.commit(TaskTxn(new=[a, b], log=[_created(a), _created(b)],
                                meta={"wm:weekly_call:gufu": T0})) == [a.task_id, b.task_id]
    # The same period again (a restart, or another instance): only the new id is stored,
    # and the log lines of the task that already existed are dropped with it.
    assert store.commit(TaskTxn(new=[b, c], log=[_created(b), _created(c)],
                                meta={"wm:weekly_call:gufu": T0 + 60})) == [c.task_id]
    assert [e["task_id"] for e in store.log() if e["action"] == "created"] == [
        a.task_id, b.task_id, c.task_id]
    assert store.get(b.task_id) == b and store.get("weekly_call:r-9:2026-W45") is None
    assert store.meta("wm:weekly_call:gufu") == T0 + 60 and store.meta("nope", 5) == 5
    reopened = open_store()
    assert reopened.open_tasks() == [a, b, c]
    assert reopened.log(c.task_id)[0]["detail"] == {"owner": "s1"}


def test_changes_queries_and_listing_order(open_store: StoreFactory) -> None:
    store = open_store()
    # Same issue time: ordered by id in byte order ('R' before 'r'), as SQLite compares.
    tasks = [_task("r-1"), _task("R-2"), _task("r-4", town="lishi"),
             _task("r-1", "monthly_visit", "2026-11", T0 - 3600),
             _task("r-1", "daily_check", "2026-11-03", T0 + 86400)]
    store.commit(TaskTxn(new=tasks, log=[_created(t) for t in tasks]))
    by_order = sorted(tasks, key=lambda t: (t.issued_at, t.task_id))
    assert store.tasks() == by_order
    done = copy.deepcopy(store.get(tasks[0].task_id))
    assert done is not None
    done.state, done.completed_by, done.completed_at = "done", "s1", T0 + 60
    store.commit(TaskTxn(changed=[done], log=[(T0 + 60, done.task_id, "s1", "completed",
                                              {"state": "done"})]))
    assert store.get(done.task_id) == done
    assert done.task_id not in {t.task_id for t in store.open_tasks()}
    assert [t.task_id for t in store.tasks(kind="weekly_call", town_id="gufu")] == [
        "weekly_call:R-2:2026-W45", "weekly_call:r-1:2026-W45"]
    assert [t.kind for t in store.tasks(issued_from=T0 - 3600, issued_to=T0)] == [
        "monthly_visit"]
    assert len(store.tasks(resident_id="r-1", issued_from=T0)) == 2
    assert [e["action"] for e in store.log(done.task_id)] == ["created", "completed"]
    seqs = [e["seq"] for e in store.log()]
    assert seqs == sorted(seqs) and len(seqs) == 6


def test_a_failed_commit_stores_neither_tasks_nor_watermark(open_store: StoreFactory) -> None:
    store = open_store()
    t = _task("r-1")
    bad = (T0, t.task_id, "system", "created", {"unserialisable": object()})
    with pytest.raises(TypeError):
        store.commit(TaskTxn(new=[t], log=[bad], meta={"wm:weekly_call:gufu": T0}))
    assert store.get(t.task_id) is None and store.meta("wm:weekly_call:gufu") is None
    assert store.log() == []
    assert store.commit(TaskTxn(new=[t], log=[_created(t)])) == [t.task_id]  # still usable


# ---- restart from the shared store -------------------------------------------------------
def _month(config: Config, data_dir: Path, stores: list[StoreFactory],
           stop_at: float | None = None, resume_at: float | None = None
           ) -> list[tuple[str, float, str, int, int]]:
    """A month of routines; with stop/resume, a second instance takes over after downtime."""
    clock = SimClock(START)
    routines, _ = make_routines(config, clock, data_dir, store=stores[0]())
    routines.tick(START)
    if stop_at is not None and resume_at is not None:
        run_until(routines, clock, stop_at)
        open_before = sorted(t.task_id for t in routines.open_tasks())
        marks = {k: routines.store.meta(f"wm:{k}:gufu") for k in ("daily_check", "weekly_call")}
        routines.close()
        clock.set(resume_at)
        routines, _ = make_routines(config, clock, data_dir, store=stores[1]())
        # Resumed from the store: the open tasks and the watermarks of the first instance.
        assert sorted(t.task_id for t in routines.open_tasks()) == open_before
        assert {k: routines.store.meta(f"wm:{k}:gufu") for k in marks} == marks
        routines.tick(resume_at)
    run_until(routines, clock, END)
    try:
        created = Counter(e["task_id"] for e in routines.log() if e["action"] == "created")
        assert set(created.values()) == {1}
        return [(t.task_id, t.issued_at, t.state, t.tier, len(t.escalations))
                for t in routines.tasks()]
    finally:
        routines.close()


def test_restart_on_postgresql_resumes_open_tasks_and_watermarks(pg_dsn: str,
                                                                 tmp_path: Path) -> None:
    config = registry()
    straight = _month(config, tmp_path / "sqlite",
                      [lambda: SqliteTaskStore(tmp_path / "sqlite" / "tasks.db")])
    shared = _month(config, tmp_path / "pg", [lambda: PgTaskStore(pg_dsn)] * 2,
                    local(2026, 11, 15, 12, 10), local(2026, 11, 18, 10))
    assert len(straight) > 150 and {s for _i, _t, s, _r, _e in straight} == {"missed", "open"}
    assert shared == straight
    assert not (tmp_path / "pg" / config.routines.db_file).exists()


# ---- two instances on one database -------------------------------------------------------
def _in_threads(fns: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=fn) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)


def test_simultaneous_completion_from_two_instances_stores_one(pg_dsn: str,
                                                               tmp_path: Path) -> None:
    config = registry()
    now = local(2026, 11, 3, 10)
    clocks = [SimClock(START), SimClock(now)]
    first, _ = make_routines(config, clocks[0], tmp_path, store=PgTaskStore(pg_dsn))
    try:
        first.tick(START)
        run_until(first, clocks[0], now)
        second, _ = make_routines(config, clocks[1], tmp_path, store=PgTaskStore(pg_dsn))
    except BaseException:
        first.close()
        raise
    ids = [t.task_id for t in first.open_tasks()]
    assert len(ids) >= 10 and ids == [t.task_id for t in second.open_tasks()]
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}

    def run(name: str, routines: Routines) -> None:
        for tid in ids:
            barrier.wait()
            try:
                routines.complete(tid, by=name, now=now, notes=f"seen by {name}")
                results[name].append((tid, "won"))
            except TaskError as exc:
                results[name].append((tid, str(exc)))

    try:
        _in_threads([partial(run, "a", first), partial(run, "b", second)])
        for tid in ids:
            stored = first.get(tid)
            assert stored.state in ("done", "late")  # late: the lishi call of W44
            outcomes = sorted(out for name in "ab" for t, out in results[name] if t == tid)
            assert outcomes == [f"task {tid} is already {stored.state}", "won"]
            winner = next(n for n in "ab" if (tid, "won") in results[n])
            assert stored.completed_by == winner
            assert [e["actor"] for e in first.log(tid) if e["action"] == "completed"] == [winner]
    finally:
        first.close()
        second.close()


def _lockstep(instances: list[Routines], clocks: list[SimClock], times: list[float]) -> None:
    barrier = threading.Barrier(len(instances), timeout=30)

    def run(routines: Routines, clock: SimClock) -> None:
        for now in times:
            barrier.wait()
            clock.set(now)
            routines.tick(now)

    _in_threads([partial(run, r, c) for r, c in zip(instances, clocks, strict=True)])


def test_concurrent_ticks_issue_and_escalate_each_task_once(pg_dsn: str,
                                                            tmp_path: Path) -> None:
    config = registry()
    times = [START + 1800.0 * i for i in range(12 * 48 + 1)]  # 12 days, every 30 min
    clock = SimClock(START)
    alone, _ = make_routines(config, clock, tmp_path / "alone")
    try:
        _lockstep([alone], [clock], times)
        expected = alone.tasks()
        expected_log = Counter((e["task_id"], e["action"], e["ts"]) for e in alone.log())
    finally:
        alone.close()
    clocks = [SimClock(START), SimClock(START)]
    pair = [make_routines(config, c, tmp_path / "pg", store=PgTaskStore(pg_dsn))[0]
            for c in clocks]
    try:
        _lockstep(pair, clocks, times)
        got = pair[0].tasks()
        assert [t.to_doc() for t in got] == [t.to_doc() for t in expected]
        log = Counter((e["task_id"], e["action"], e["ts"]) for e in pair[1].log())
        assert log == expected_log and set(log.values()) == {1}
        assert {"escalated", "missed"} <= {action for _t, action, _ts in log}
    finally:
        for r in pair:
            r.close()


def test_stale_copy_is_refused_and_nothing_of_its_step_is_written(pg_dsn: str) -> None:
    a, b = PgTaskStore(pg_dsn), PgTaskStore(pg_dsn)
    try:
        t = _task("r-1")
        a.commit(TaskTxn(new=[t], log=[_created(t)]))
        mine, theirs = a.get(t.task_id), b.get(t.task_id)
        assert mine is not None and theirs is not None
        theirs.tier = 2
        b.commit(TaskTxn(changed=[theirs], log=[(T0, t.task_id, "system", "escalated", {})]))
        mine.state = "done"
        step = TaskTxn(changed=[mine], log=[(T0, t.task_id, "s1", "completed", {})],
                       meta={"wm:weekly_call:gufu": T0})
        with pytest.raises(StaleTaskError, match="changed by another instance") as err:
            a.commit(step)
        assert err.value.task_ids == [t.task_id]
        assert a.meta("wm:weekly_call:gufu") is None
        assert [e["action"] for e in a.log(t.task_id)] == ["created", "escalated"]
        fresh = a.get(t.task_id)  # reloaded: the change applies
        assert fresh is not None and fresh.tier == 2
        fresh.state = "done"
        a.commit(TaskTxn(changed=[fresh]))
        theirs.state = "late"
        with pytest.raises(TaskError, match="is already done"):
            b.commit(TaskTxn(changed=[theirs]))
    finally:
        a.close()
        b.close()


def test_task_log_is_append_only(pg_dsn: str) -> None:
    store = PgTaskStore(pg_dsn)
    try:
        t = _task("r-1")
        store.commit(TaskTxn(new=[t], log=[_created(t)]))
    finally:
        store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for sql in ("UPDATE routine_task_log SET actor = 'x'", "DELETE FROM routine_task_log",
                    "TRUNCATE routine_task_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(sql)
        row = conn.execute("SELECT count(*), min(actor) FROM routine_task_log").fetchone()
        assert row == (1, "system")


# ---- daily checks and reports on the PostgreSQL alert store -----------------------------
def _with_alerts(config: Config, data_dir: Path) -> dict[str, Any]:
    """Routines and alert engine from `config`; three alerts on Nov 4, one acked and
    resolved; returns the daily checks of Nov 5, the month report and the alert history."""
    clock = SimClock(START)
    devices = DeviceTable.from_config(config)
    engine = AlertEngine(config, devices, clock, ListPublisher(), data_dir,
                         deterministic_ids=True, send_notifications=False)
    routines = Routines(config, devices, clock, data_dir, alerts=engine)
    try:
        routines.tick(START)
        run_until(routines, clock, local(2026, 11, 3, 10))
        routines.complete("weekly_call:r-1:2026-W45", by="s1", now=clock.now(), notes="fine")
        t = local(2026, 11, 4, 10)
        run_until(routines, clock, t)
        for rid, kind, sev in (("r-1", "k1", "high"), ("r-3", "k2", "medium"),
                               ("r-4", "k1", "critical")):
            engine.raise_manual(rid, kind=kind, severity=sev, by="test", note="case", now=t)
        for dt in range(0, 3601, 60):
            clock.set(t + dt)
            engine.tick(t + dt)
            if dt == 120:
                engine.ack("r-1", "k1", "someone", t + dt)
            if dt == 1200:
                engine.resolve("r-1", "k1", "someone", t + dt, "done")
        run_until(routines, clock, local(2026, 11, 6, 10))
        data = routines.alert_data
        assert data is not None
        return {
            "stores": (type(engine.store).__name__, type(routines.store).__name__,
                       type(data).__name__),
            "checks": {x.resident_id: x.check for x in routines.tasks(kind="daily_check")
                       if x.period == "2026-11-05"},
            "report": build_report(config, routines.store, data, "month", "2026-11",
                                   clock.now()),
            "history": data.opened_between(t - 60, t + 60),
            "unresolved": [sorted(a.alert_id for a in data.unresolved_at(at))
                           for at in (t - 1, t + 600, t + 1800)],
        }
    finally:
        routines.close()
        engine.close()


def test_daily_checks_and_reports_read_the_postgresql_alert_store(
        pg_server: PgServer, pg_dsn: str, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn)
    pg_config = registry(storage={"alerts_backend": "postgresql",
                                  "postgresql": {"dsn_file": str(dsn_file)}})
    shared = _with_alerts(pg_config, tmp_path / "pg")
    embedded = _with_alerts(registry(), tmp_path / "sqlite")
    assert shared["stores"] == ("PgAlertStore", "PgTaskStore", "PgAlertData")
    assert embedded["stores"] == ("SqliteAlertStore", "SqliteTaskStore", "AlertData")
    assert not any((tmp_path / "pg").glob("*.db"))  # nothing embedded was written
    checks = shared["checks"]
    assert {r: c["alerts"] for r, c in checks.items()} == {"r-1": 1, "r-2": 0, "r-3": 1,
                                                           "r-4": 1}
    assert checks["r-1"]["status"] == "action_needed"
    assert checks == embedded["checks"]
    assert shared["report"]["district"]["alerts"]["total"] == 3
    assert shared["report"] == embedded["report"]
    assert [r.tier_reached for r in shared["history"]] == [
        r.tier_reached for r in embedded["history"]]
    assert max(len(r.tier_reached) for r in shared["history"]) > 1  # escalations were read
    assert shared["history"] == embedded["history"]
    assert shared["unresolved"] == embedded["unresolved"]
    assert [len(ids) for ids in shared["unresolved"]] == [0, 3, 2]
    # A database without an alert store yet has no alerts (as a missing SQLite file).
    assert PgAlertData(pg_server.dsn("postgres")).opened_between(0, END) == []
    assert AlertData(tmp_path / "missing.db").opened_between(0, END) == []
