"""A hazard found on a routine opens its alert only once the completion is stored, and a
stored completion always leads to its alert: when the alert engine fails (or the process
stops) between the two, a later tick — of this process or of the next one — raises it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alerts.engine import AlertEngine
from carewatch.clock import SimClock
from ingest.devices import DeviceTable
from ingest.publish import ListPublisher
from routines.hazards import GRACE_S
from routines.model import TaskError
from routines.service import Routines
from routines.store import SqliteTaskStore, TaskStore
from tests.routines_helpers import local, registry, run_until

pytest_plugins = ["tests.pg_fixture"]

START = local(2026, 11, 1)
TASK = "monthly_inspection:r-2:2026-11"
HAZARD = "cracked gas hose in the kitchen"


@pytest.fixture(params=["sqlite", "postgresql"])
def task_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TaskStore]]:
    """Opens the task store (again, as after a restart); alerts stay on SQLite."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None

    def make() -> TaskStore:
        if dsn is not None:
            from routines.store_pg import PgTaskStore

            return PgTaskStore(dsn)
        return SqliteTaskStore(tmp_path / "tasks.db")

    yield make


def _start(tmp_path: Path, clock: SimClock, store: TaskStore) -> tuple[Routines, AlertEngine]:
    config = registry()
    devices = DeviceTable.from_config(config)
    engine = AlertEngine(config, devices, clock, ListPublisher(), tmp_path,
                         deterministic_ids=True, send_notifications=False)
    return Routines(config, devices, clock, tmp_path, alerts=engine, store=store), engine


def test_a_stored_hazard_completion_leads_to_its_alert_after_a_failure(
        task_store: Callable[[], TaskStore], tmp_path: Path) -> None:
    clock = SimClock(START)
    routines, engine = _start(tmp_path, clock, task_store())
    try:
        run_until(routines, clock, local(2026, 11, 5, 10))
        now = clock.now()
        engine.close()  # the alert store is gone when the hazard is reported
        t = routines.complete(TASK, by="s1", now=now, notes="valve closed", hazard=HAZARD)
        assert (t.state, t.outcome, t.alert_id) == ("done", "hazard_found", None)
        assert routines.get(TASK).state == "done"  # the completion stands
        assert list(routines.store.meta_prefix("hazard_alert:")) == [f"hazard_alert:{TASK}"]
    finally:
        routines.close()
        engine.close()
    # The next process: the pending alert is raised by a tick once its grace time is over
    # (before, its completer may still be raising it), and recorded on the task.
    routines, engine = _start(tmp_path, clock, task_store())
    try:
        routines.tick(now + GRACE_S / 2)
        assert engine.open_alerts() == []
        routines.tick(now + GRACE_S)
        alerts = engine.open_alerts()
        assert [(a.resident_id, a.kind, a.severity_name, a.evidence["task_id"])
                for a in alerts] == [("r-2", "hazard", "high", TASK)]
        assert routines.get(TASK).alert_id == alerts[0].alert_id
        assert [(e["action"], e["actor"]) for e in routines.log(TASK)][-2:] == [
            ("completed", "s1"), ("alert_opened", "system")]
        assert routines.log(TASK)[-1]["detail"] == {"alert_id": alerts[0].alert_id}
        assert routines.store.meta_prefix("hazard_alert:") == {}
        routines.tick(now + 2 * GRACE_S)
        assert len(engine.open_alerts()) == 1
        assert [e["event"] for e in engine.events(alerts[0].alert_id)] == ["opened"]
    finally:
        routines.close()
        engine.close()


def test_the_alert_follows_the_stored_completion_and_a_refusal_raises_none(
        task_store: Callable[[], TaskStore], tmp_path: Path) -> None:
    clock = SimClock(START)
    routines, engine = _start(tmp_path, clock, task_store())
    try:
        run_until(routines, clock, local(2026, 11, 5, 10))
        now = clock.now()
        with pytest.raises(TaskError, match="hazard_severity"):
            routines.complete(TASK, by="s1", now=now, notes="x", hazard=HAZARD,
                              hazard_severity="dire")
        assert routines.get(TASK).state == "open" and engine.open_alerts() == []
        t = routines.complete(TASK, by="s1", now=now, notes="valve closed", hazard=HAZARD)
        assert t.alert_id is not None and routines.get(TASK) == t
        assert [e["action"] for e in routines.log(TASK)] == [
            "created", "completed", "alert_opened"]
        with pytest.raises(TaskError, match="already done"):
            routines.complete(TASK, by="s2", now=now, notes="again", hazard="another")
        assert [a.alert_id for a in engine.open_alerts()] == [t.alert_id]
        assert routines.store.meta_prefix("hazard_alert:") == {}
    finally:
        routines.close()
        engine.close()
