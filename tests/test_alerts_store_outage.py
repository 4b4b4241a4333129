"""The alert store failing under the engine (a real PostgreSQL, stopped and restarted): what
a failed commit changed in memory is taken back, so escalation goes on as stored and the
console's retry works; the first write after a server restart reconnects; and workers
sharing one store each handle their own towns' alerts only."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from alerts.pg_local import PgServer
from alerts.store_pg import PgAlertStore
from alerts.testing import T0, Harness, finding, minimal_config
from carewatch.workers import worker_config

pytest_plugins = ["tests.pg_fixture"]


def test_the_first_write_after_a_server_restart_reconnects(pg_server: PgServer, pg_dsn: str,
                                                           tmp_path: Path) -> None:
    h = Harness(tmp_path, store=PgAlertStore(pg_dsn))
    try:
        h.findings(finding("fall", [0], 4))
        alert_id = h.events[0]["alert_id"]
        pg_server.stop()
        pg_server.start()
        h.engine.ack_alert(alert_id, "carer-1", T0 + 20)  # raised before: a dead connection
        stored = h.engine.store.get_alert(alert_id)
        assert stored is not None and stored.state == "acknowledged"
        assert [e["event"] for e in h.events] == ["opened", "acknowledged"]
    finally:
        h.close()


def test_an_ack_the_store_refused_is_taken_back(pg_server: PgServer, pg_dsn: str,
                                                tmp_path: Path) -> None:
    """Staff ack while the database is down: they get the error, and the alert stays open
    and escalating, as stored (it used to stay acknowledged in memory alone: no escalation,
    and the retry refused as already acknowledged)."""
    h = Harness(tmp_path, store=PgAlertStore(pg_dsn))
    try:
        h.findings(finding("fall", [0], 4))  # critical: 120 s a tier
        alert_id = h.events[0]["alert_id"]
        pg_server.stop()
        try:
            with pytest.raises(psycopg.OperationalError):
                h.engine.ack_alert(alert_id, "carer-1", T0 + 20)
        finally:
            pg_server.start()
        h.run_until(T0 + 130, step=5)  # the tick takes the stored alert again, then escalates
        held = h.engine.get_alert(alert_id)
        assert (held.state, held.tier) == ("escalated", 2)
        h.engine.ack_alert(alert_id, "carer-1", T0 + 140)  # the retry is not refused
        stored = h.engine.store.get_alert(alert_id)
        assert stored is not None and stored.state == "acknowledged"
        assert [e["event"] for e in h.events] == ["opened", "escalated", "acknowledged"]
    finally:
        h.close()


def _read_only(dsn: str, on: bool) -> None:
    """Make the database read-only for new sessions (a hot standby after a failover) and
    end the others, whose reconnects get it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # this session may write
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                     + ("on" if on else "off"))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_a_resolve_the_store_refused_leaves_the_alert_on_the_board(pg_dsn: str,
                                                                   tmp_path: Path) -> None:
    """The store reads but refuses writes: the refused resolve is taken back at once (the
    alert had vanished from the board and stopped escalating while still open in the
    store), and the retry once writes work again is a plain resolve."""
    h = Harness(tmp_path, store=PgAlertStore(pg_dsn))
    try:
        h.findings(finding("fall", [0], 4))
        alert_id = h.events[0]["alert_id"]
        _read_only(pg_dsn, True)
        try:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                h.engine.resolve_alert(alert_id, "carer-1", T0 + 20, "checked")
            assert [a.alert_id for a in h.engine.open_alerts()] == [alert_id]
            assert h.engine.get_alert(alert_id).state == "open"
        finally:
            _read_only(pg_dsn, False)
        h.run_until(T0 + 130, step=5)
        assert h.engine.get_alert(alert_id).tier == 2
        h.engine.resolve_alert(alert_id, "carer-1", T0 + 140, "checked")
        assert [e["event"] for e in h.events] == ["opened", "escalated", "resolved"]
    finally:
        h.close()


def test_workers_on_one_store_escalate_their_own_towns_alone(pg_dsn: str,
                                                            tmp_path: Path) -> None:
    """A worker starting while another's alert is open does not take it on: escalating it
    with no route to that town's staff notified nobody, and the owner's own escalation was
    then refused as stale."""
    full = minimal_config(residents=2, staff=[  # r-0001 lives in gufu, r-0002 in lishi
        {"id": "desk-gufu", "tier": 2, "town": "gufu", "webhook": "http://gufu.invalid/hook"},
        {"id": "desk-lishi", "tier": 2, "town": "lishi",
         "webhook": "http://lishi.invalid/hook"}])
    lishi = Harness(tmp_path / "w1", worker_config(full, ["lishi"]),
                    store=PgAlertStore(pg_dsn), send_notifications=False)
    gufu = None
    try:
        lishi.findings(finding("fall", [0], 4))  # row 0 of lishi's devices: r-0002
        alert_id = lishi.events[0]["alert_id"]
        gufu = Harness(tmp_path / "w0", worker_config(full, ["gufu"]),
                       store=PgAlertStore(pg_dsn), send_notifications=False)
        assert gufu.engine.open_alerts() == []
        gufu.engine.tick(T0 + 121)  # the other worker ticks first
        lishi.engine.tick(T0 + 121.3)
        stored = lishi.engine.store.get_alert(alert_id)
        assert stored is not None and (stored.tier, stored.on_duty) == (2, ["desk-lishi"])
        assert "http://lishi.invalid/hook" in [o["target"] for o in lishi.engine.store.outbox()]
    finally:
        if gufu is not None:
            gufu.close()
        lishi.close()
