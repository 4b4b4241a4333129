"""Engines sharing one PostgreSQL store follow each other: on each tick an engine takes in
the alerts other instances acknowledged, resolved or opened for its residents
(alerts/pg_refresh.py), and a store created before the change column is migrated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.store_pg import PgAlertStore
from alerts.testing import T0, Harness, finding, minimal_config

pytest_plugins = ["tests.pg_fixture"]

MakeHarness = Callable[..., Harness]


@pytest.fixture
def make(pg_dsn: str, tmp_path: Path) -> Iterator[MakeHarness]:
    """Harnesses on the same database, each with its own store connection."""
    made: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        h = Harness(tmp_path, store=PgAlertStore(pg_dsn), **kwargs)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def _fall_deadline(h: Harness) -> float:
    (alert,) = h.engine.open_alerts()
    assert alert.deadline is not None and alert.deadline > h.clock.now() + 2
    return alert.deadline


def test_ack_elsewhere_reaches_the_cache_before_the_deadline(make: MakeHarness) -> None:
    a, b = make(), make()
    a.findings(finding("fall", [0], 4))
    alert_id = a.events[0]["alert_id"]
    deadline = _fall_deadline(a)
    a.run_until(T0 + 5)  # the deadline floor is set: later ticks skip the scan
    b.engine.ack_alert(alert_id, "carer", T0 + 6)
    a.run_until(T0 + 7)
    (alert,) = a.engine.open_alerts()
    assert alert.state == "acknowledged" and alert.deadline is None
    assert a.engine.next_deadline() is None  # the floor was reset and recomputed
    a.run_until(deadline + 60)
    assert a.kinds_of("escalated") == []
    assert [e["event"] for e in a.engine.events(alert_id)] == ["opened", "acknowledged"]


def test_resolve_elsewhere_drops_the_alert(make: MakeHarness) -> None:
    a, b = make(), make()
    a.findings(finding("fall", [0], 4), finding("hypoxemia", [1], 3, spo2_min=[88]))
    fall_id = a.events[0]["alert_id"]
    b.engine.resolve_alert(fall_id, "carer", T0 + 3, note="helped up")
    a.run_until(T0 + 4)
    assert [x.kind for x in a.engine.open_alerts()] == ["hypoxemia"]
    # the (resident, kind) is free again: a new fall opens a new alert, not an update
    a.findings(finding("fall", [0], 4))
    assert [e["event"] for e in a.kinds_of("opened")] == ["opened"] * 3
    assert len({x.alert_id for x in a.engine.open_alerts()} - {fall_id}) == 2


def test_alert_opened_elsewhere_appears_for_own_residents_only(make: MakeHarness) -> None:
    a = make(config=minimal_config(residents=1))  # only r-0001 is A's
    b = make()
    a.run_until(T0 + 1)
    b.findings(finding("fall", [0, 2], 4))
    assert {e["resident_id"] for e in b.kinds_of("opened")} == {"r-0001", "r-0003"}
    a.run_until(T0 + 2)
    (alert,) = a.engine.open_alerts()
    assert (alert.resident_id, alert.kind, alert.state) == ("r-0001", "fall", "open")
    # held as stored: A's own ack goes through without a refused commit
    a.engine.ack("r-0001", "fall", "carer", T0 + 3)
    assert [e["event"] for e in b.engine.events(alert.alert_id)] == ["opened", "acknowledged"]


def test_store_without_the_change_column_is_migrated(pg_dsn: str, make: MakeHarness) -> None:
    old = make()
    old.findings(finding("fall", [0], 4))
    alert_id = old.events[0]["alert_id"]
    old.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the layout before the column
        conn.execute("ALTER TABLE alerts DROP COLUMN changed_xid")
    a, b = make(), make()  # opening the store adds the column back, rows keep their data
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'alerts'")}
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'alerts'")}
    assert "changed_xid" in cols and "alerts_changed" in indexes
    (held,) = a.engine.open_alerts()
    assert held.alert_id == alert_id and held.state == "open"
    b.engine.ack_alert(alert_id, "carer", T0 + 5)
    a.run_until(T0 + 6)
    assert [x.state for x in a.engine.open_alerts()] == ["acknowledged"]
