"""The alert store contract on both backends, and what only the shared PostgreSQL store adds:
version conflicts, outbox claims between instances, an append-only audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from alerts.model import Alert
from alerts.store import AlertStore, OutboxRow, SqliteAlertStore, Txn
from alerts.store_pg import PgAlertStore, dsn_from_settings
from alerts.store_pg_base import StaleAlertError, version_of
from alerts.testing import T0
from config.models import PostgresSettings

if TYPE_CHECKING:  # imported by pytest as a plugin (below); importing it here first
    from tests.pg_fixture import PgServer  # would skip its assertion rewriting

pytest_plugins = ["tests.pg_fixture"]


def _alert(alert_id: str, resident: str = "r-0001", state: str = "open") -> Alert:
    return Alert(alert_id=alert_id, resident_id=resident, device_id="dev-0001", town_id="gufu",
                 kind="fall", severity=4, state=state, tier=1, opened_at=T0, updated_at=T0,
                 condition_active=True, evidence={"x": 1.5}, message="m", deadline=T0 + 120,
                 tier_reached_at=T0)


def _row(key: str, group: str = "g", due: float = T0) -> OutboxRow:
    return OutboxRow(dedup_key=key, channel="webhook", target="http://127.0.0.1:9/h",
                     group_key=group, payload={"k": key}, created_at=T0, due_at=due)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertStore]:
    s: AlertStore
    if request.param == "sqlite":
        s = SqliteAlertStore(tmp_path / "alerts.db")
    else:
        s = PgAlertStore(request.getfixturevalue("pg_dsn"))
    yield s
    s.close()


def test_commit_returns_event_seqs_and_outbox_until_published(store: AlertStore) -> None:
    a = _alert("al-1")
    seqs = store.commit(Txn(alerts=[a], events=[("al-1", "t/1", {"event": "opened"}),
                                                ("al-1", "t/1", {"event": "escalated"})],
                            audit=[(T0, "al-1", "r-0001", "system", "opened", {"n": 1})],
                            meta={"counter": 3}))
    assert len(seqs) == 2 and seqs[1] > seqs[0]
    assert [(s, d["event"]) for s, _t, d in store.unpublished_events()] == [
        (seqs[0], "opened"), (seqs[1], "escalated")]
    store.mark_published(seqs[:1])
    assert [s for s, _t, _d in store.unpublished_events()] == seqs[1:]
    assert store.get_alert("al-1") == a and store.open_alerts() == [a]
    assert store.meta("counter") == 3 and store.meta("nope", 7) == 7
    assert [e["action"] for e in store.audit("al-1")] == ["opened"]
    assert store.audit()[0]["detail"] == {"n": 1}


def test_resolved_alerts_leave_open_list_but_stay_in_history(store: AlertStore) -> None:
    a, b = _alert("al-1"), _alert("al-2")
    store.commit(Txn(alerts=[a, b]))
    a.state = "resolved"
    store.commit(Txn(alerts=[a]))
    assert [x.alert_id for x in store.open_alerts()] == ["al-2"]
    assert [x.state for x in store.history("r-0001")] == ["resolved", "open"]


def test_outbox_dedup_group_wait_and_attempts(store: AlertStore) -> None:
    store.commit(Txn(outbox=[_row("k1", "g1", T0), _row("k2", "g1", T0 + 50),
                             _row("k3", "g2", T0 + 50)]))
    store.commit(Txn(outbox=[_row("k1", "g1", T0)]))  # same notice again: queued once
    assert len(store.outbox()) == 3
    due = store.due_outbox(T0 + 1, set(), 10)
    assert [r.dedup_key for r in due] == ["k1", "k2"]  # the whole group once its first is due
    ids = [r.outbox_id for r in due]
    assert store.due_outbox(T0 + 1, set(ids), 10) == []
    store.record_attempt(ids, T0 + 1, "started", None, "", None)
    store.record_attempt(ids, T0 + 2, "retry", 503, "HTTP 503", T0 + 100)
    assert store.due_outbox(T0 + 3, set(), 10) == []  # backed off
    store.record_attempt(ids, T0 + 101, "sent", 200, "", None)
    assert [d["outcome"] for d in store.deliveries(ids[0])] == ["started", "retry", "sent"]
    assert {o["status"] for o in store.outbox() if o["outbox_id"] in ids} == {"sent"}


def test_silences_upsert_and_expire(store: AlertStore) -> None:
    s = {"silence_id": "si-1", "resident_id": "r-0001", "by": "x", "created_at": T0,
         "until": T0 + 60, "active": True}
    store.commit(Txn(silences=[s]))
    assert store.active_silences() == [s]
    store.commit(Txn(silences=[{**s, "active": False}]))
    assert store.active_silences() == []


# ---- only the shared store ----------------------------------------------------------------
def test_stale_copy_is_refused_and_nothing_of_its_txn_is_written(pg_dsn: str) -> None:
    one, two = PgAlertStore(pg_dsn), PgAlertStore(pg_dsn)
    try:
        one.commit(Txn(alerts=[_alert("al-1")]))
        mine, theirs = one.get_alert("al-1"), two.get_alert("al-1")
        assert mine is not None and theirs is not None and version_of(mine) == 1
        theirs.state = "acknowledged"
        two.commit(Txn(alerts=[theirs], audit=[(T0, "al-1", "r-0001", "b", "acknowledged", {})]))
        assert version_of(theirs) == 2
        mine.state = "dispatched"
        with pytest.raises(StaleAlertError, match="changed by another instance") as err:
            one.commit(Txn(alerts=[mine], events=[("al-1", "t", {"event": "dispatched"})],
                           audit=[(T0, "al-1", "r-0001", "a", "dispatched", {})]))
        assert err.value.alert_ids == ["al-1"] and version_of(mine) == 1
        stored = one.get_alert("al-1")
        assert stored is not None and stored.state == "acknowledged"
        assert [e["action"] for e in one.audit()] == ["acknowledged"]
        assert one.events() == []
        with pytest.raises(StaleAlertError):  # a second "new" alert with a taken id
            two.commit(Txn(alerts=[_alert("al-1")]))
    finally:
        one.close()
        two.close()


def test_a_many_alert_step_names_exactly_its_stale_alerts(pg_dsn: str) -> None:
    """One step's alerts are written in two statements (new ones, known ones): the stale
    among them, a taken id and an out-of-date copy, are named, and the rest is rolled back."""
    one, two = PgAlertStore(pg_dsn), PgAlertStore(pg_dsn)
    try:
        one.commit(Txn(alerts=[_alert(f"al-{i}", f"r-{i:04d}") for i in range(5)]))
        copies = [one.get_alert(f"al-{i}") for i in range(5)]
        theirs = two.get_alert("al-3")
        assert theirs is not None and all(c is not None for c in copies)
        theirs.state = "acknowledged"
        two.commit(Txn(alerts=[theirs]))
        for c in copies:
            assert c is not None
            c.state = "dispatched"
        fresh = [_alert(f"al-{i}", f"r-{i:04d}") for i in (7, 1, 8)]  # al-1 is taken
        with pytest.raises(StaleAlertError) as err:
            one.commit(Txn(alerts=[*copies, *fresh]))
        assert sorted(err.value.alert_ids) == ["al-1", "al-3"]
        states = {a.alert_id: a.state for a in one.open_alerts()}
        assert states == {"al-0": "open", "al-1": "open", "al-2": "open",
                          "al-3": "acknowledged", "al-4": "open"}
        ok = [c for c in copies if c is not None and c.alert_id != "al-3"]
        one.commit(Txn(alerts=[*ok, fresh[0], fresh[2]]))
        assert [version_of(c) for c in ok] == [2, 2, 2, 2]
        states = {a.alert_id: a.state for a in two.open_alerts()}
        assert states == {"al-0": "dispatched", "al-1": "dispatched", "al-2": "dispatched",
                          "al-3": "acknowledged", "al-4": "dispatched", "al-7": "open",
                          "al-8": "open"}
    finally:
        one.close()
        two.close()


def test_outbox_rows_go_to_one_instance_and_are_taken_over_after_its_lease(pg_dsn: str) -> None:
    a = PgAlertStore(pg_dsn, instance="a", claim_lease_s=30)
    b = PgAlertStore(pg_dsn, instance="b", claim_lease_s=30)
    try:
        a.commit(Txn(outbox=[_row(f"k{i}", f"g{i}") for i in range(6)]))
        got_a = a.due_outbox(T0 + 1, set(), 3)
        got_b = b.due_outbox(T0 + 1, set(), 10)
        assert len(got_a) == 3 and len(got_b) == 3
        assert not {r.outbox_id for r in got_a} & {r.outbox_id for r in got_b}
        # `a` got its rows but stopped before sending (crash): they stay claimed for the
        # lease, then another instance sends them.
        assert b.due_outbox(T0 + 20, {r.outbox_id for r in got_b}, 10) == []
        taken = b.due_outbox(T0 + 32, {r.outbox_id for r in got_b}, 10)
        assert sorted(r.outbox_id for r in taken) == sorted(r.outbox_id for r in got_a)
        b.record_attempt([r.outbox_id for r in taken], T0 + 33, "sent", 200, "", None)
        # Sent rows never come back; b's unsent ones do, once b's lease is over.
        later = a.due_outbox(T0 + 100, set(), 10)
        assert sorted(r.outbox_id for r in later) == sorted(r.outbox_id for r in got_b)
    finally:
        a.close()
        b.close()


def test_audit_and_deliveries_are_append_only(pg_dsn: str) -> None:
    s = PgAlertStore(pg_dsn)
    s.commit(Txn(audit=[(T0, "al-1", "r-0001", "system", "opened", {})],
                 events=[("al-1", "t", {"event": "opened"})]))
    s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit",
                    "TRUNCATE audit", "UPDATE events SET doc = '{}'::json",
                    "DELETE FROM events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(sql)
        conn.execute("UPDATE events SET published = TRUE")  # the one change allowed
        assert conn.execute("SELECT actor FROM audit").fetchall() == [("system",)]


def test_reads_survive_a_server_restart(pg_server: PgServer, pg_dsn: str) -> None:
    s = PgAlertStore(pg_dsn)
    try:
        s.commit(Txn(alerts=[_alert("al-1")]))
        pg_server.stop()
        pg_server.start()
        assert [a.alert_id for a in s.open_alerts()] == ["al-1"]  # reconnected
        s.commit(Txn(alerts=[_alert("al-2")]))
        assert len(s.open_alerts()) == 2
    finally:
        s.close()


def test_dsn_from_settings_reads_password_file(pg_server: PgServer, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(pg_server.password + "\n")
    settings = PostgresSettings(host=pg_server.host, port=pg_server.port, dbname="postgres",
                                user=pg_server.user, password_file=str(pw))
    with psycopg.connect(dsn_from_settings(settings)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (pg_server.user,)
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_server.dsn() + "\n")
    assert dsn_from_settings(PostgresSettings(dsn_file=str(dsn_file))) == pg_server.dsn()


def test_audit_hash_chain_across_instances_verifies(pg_dsn: str) -> None:
    one, two = PgAlertStore(pg_dsn), PgAlertStore(pg_dsn)
    try:
        for i in range(4):
            (one if i % 2 else two).commit(Txn(audit=[
                (T0 + i, f"al-{i}", "r-0001", "carer", "acknowledged", {"n": i, "x": 1.5}),
                (T0 + i, None, None, "system", "note", {})]))
        verdict = one.verify_audit()
        assert verdict.ok and verdict.entries == 8
        assert [e["seq"] for e in one.audit()] == list(range(1, 9))
    finally:
        one.close()
        two.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # an owner bypassing the trigger
        conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
        conn.execute("""UPDATE audit SET detail = '{"n": 9, "x": 1.5}' WHERE seq = 3""")
    check = PgAlertStore(pg_dsn)
    try:
        verdict = check.verify_audit()
        assert not verdict.ok and verdict.first_bad == 3 and "altered" in verdict.reason
    finally:
        check.close()
