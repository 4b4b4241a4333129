"""The audit log is append-only and tamper-evident; `carewatch audit verify` finds the break."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.store import SqliteAlertStore, Txn, verify_audit_chain

T0 = 1764316800.0


def fill(path: Path, n: int = 6) -> None:
    store = SqliteAlertStore(path)
    for i in range(n):
        store.commit(Txn(audit=[(T0 + i, f"al-{i}", "r-0001", "system", "opened", {"i": i}),
                                (T0 + i, f"al-{i}", "r-0001", "staff-1", "acknowledged", {})]))
    store.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carewatch.cli", "audit", "verify", *args],
                          capture_output=True, text=True, timeout=60)


def tamper(path: Path, *sql: str) -> None:
    """An attacker with write access to the file: drops the guards, then edits."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    for s in sql:
        db.execute(s)
    db.commit()
    db.close()


def test_intact_chain_verifies_and_cli_says_ok(tmp_path: Path) -> None:
    fill(tmp_path / "alerts.db")
    v = verify_audit_chain(tmp_path / "alerts.db")
    assert v.ok and v.entries == 12 and len(v.head) == 64
    out = cli("--data-dir", str(tmp_path))
    assert out.returncode == 0 and "12 entries" in out.stdout and v.head in out.stdout


def test_update_and_delete_are_refused(tmp_path: Path) -> None:
    fill(tmp_path / "alerts.db")
    db = sqlite3.connect(tmp_path / "alerts.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'x' WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 3")
    db.close()


@pytest.mark.parametrize(("sql", "bad", "why"), [
    (("UPDATE audit SET actor = 'mallory' WHERE seq = 5",), 5, "altered"),
    (("UPDATE audit SET detail = '{\"i\":99}' WHERE seq = 7",), 7, "altered"),
    (("DELETE FROM audit WHERE seq = 4",), 5, "missing"),
    (("DELETE FROM audit WHERE seq >= 11",), 11, "removed from the end"),
    (("UPDATE audit SET ts = ts + 1 WHERE seq = 2",), 2, "altered"),
])
def test_tampering_is_found_at_the_first_bad_entry(tmp_path: Path, sql: tuple[str, ...],
                                                   bad: int, why: str) -> None:
    path = tmp_path / "alerts.db"
    fill(path)
    tamper(path, *sql)
    v = verify_audit_chain(path)
    assert not v.ok and v.first_bad == bad and why in v.reason
    if bad == 5:  # the command line once (a subprocess costs seconds here)
        out = cli("--db", str(path))
        assert out.returncode == 1 and f"entry {bad}" in out.stdout


def test_rehashed_entry_still_breaks_the_link_to_the_next(tmp_path: Path) -> None:
    from alerts.store import audit_entry_hash

    path = tmp_path / "alerts.db"
    fill(path)
    db = sqlite3.connect(path)
    seq, ts, aid, rid, _actor, action, detail, prev = db.execute(
        "SELECT seq, ts, alert_id, resident_id, actor, action, detail, prev_hash FROM audit "
        "WHERE seq = 6").fetchone()
    forged = audit_entry_hash(seq, ts, aid, rid, "mallory", action, detail, prev)
    db.close()
    tamper(path, f"UPDATE audit SET actor = 'mallory', hash = '{forged}' WHERE seq = 6")
    v = verify_audit_chain(path)
    assert not v.ok and v.first_bad == 7 and "chain" in v.reason


def test_store_from_before_the_chain_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
        "alert_id TEXT, resident_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, "
        "detail TEXT NOT NULL);"
        "INSERT INTO audit(ts, alert_id, resident_id, actor, action, detail) "
        "VALUES (1.0, 'a', 'r', 'system', 'opened', '{}'), (2, 'a', 'r', 's', 'ack', '{}');")
    db.commit()
    db.close()
    store = SqliteAlertStore(path)
    store.commit(Txn(audit=[(3, "a", "r", "s", "resolved", {"note": "ok"})]))
    assert [a["action"] for a in store.audit()] == ["opened", "ack", "resolved"]
    store.close()
    v = verify_audit_chain(path)
    assert v.ok and v.entries == 3
