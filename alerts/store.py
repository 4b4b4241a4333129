"""Durable alert store: alerts, events, audit log, notification outbox and delivery attempts.

`AlertStore` is the interface the engine uses (a PostgreSQL backend can implement it later);
`SqliteAlertStore` is the default, one WAL-mode SQLite file. Every change the engine makes is
one `Txn`, committed atomically *before* anything is published or sent, so a crash at any
instant leaves either the whole change or none of it, and anything sent has its record.

The audit log is append-only (triggers refuse UPDATE and DELETE) and tamper-evident: each
entry stores the SHA-256 of its own content and of the previous entry's hash, and the head
(last seq and hash) is kept in `meta`; `verify_audit_chain` (`carewatch audit verify`) finds
the first entry that does not fit.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from alerts.model import Alert
from carewatch.files import private_db


@dataclass
class OutboxRow:
    """One notification to one recipient over one channel."""

    dedup_key: str
    channel: str  # "webhook"
    target: str  # URL
    group_key: str  # rows with the same group key due together are sent as one
    payload: dict[str, Any]
    created_at: float
    due_at: float
    outbox_id: int = 0
    attempts: int = 0


@dataclass
class Txn:
    """Everything one engine step changes, stored atomically."""

    alerts: list[Alert] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # id, topic, doc
    audit: list[tuple[float, str | None, str | None, str, str, dict[str, Any]]] = field(
        default_factory=list)  # ts, alert_id, resident_id, actor, action, detail
    outbox: list[OutboxRow] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.events or self.audit or self.outbox or self.silences
                    or self.meta)


class AlertStore(Protocol):
    """What the engine needs from a durable store."""

    def commit(self, txn: Txn) -> list[int]:
        """Store `txn` atomically; return the sequence numbers of its events, in order."""
        ...

    def mark_published(self, seqs: list[int]) -> None: ...
    def unpublished_events(self) -> list[tuple[int, str, dict[str, Any]]]: ...
    def open_alerts(self) -> list[Alert]: ...
    def get_alert(self, alert_id: str) -> Alert | None: ...
    def history(self, resident_id: str) -> list[Alert]: ...
    def events(self, alert_id: str | None = None) -> list[dict[str, Any]]: ...
    def audit(self, alert_id: str | None = None) -> list[dict[str, Any]]: ...
    def active_silences(self) -> list[dict[str, Any]]: ...
    def meta(self, key: str, default: Any = None) -> Any: ...
    def due_outbox(self, now: float, exclude: set[int], limit: int) -> list[OutboxRow]: ...
    def record_attempt(self, outbox_ids: list[int], ts: float, outcome: str,
                       status_code: int | None, error: str, next_at: float | None) -> None: ...
    def deliveries(self, outbox_id: int | None = None) -> list[dict[str, Any]]: ...
    def outbox(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  alert_id TEXT PRIMARY KEY, resident_id TEXT NOT NULL, kind TEXT NOT NULL,
  state TEXT NOT NULL, opened_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_resident ON alerts(resident_id, opened_at);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, topic TEXT NOT NULL,
  doc TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_alert ON events(alert_id);
CREATE INDEX IF NOT EXISTS events_unpublished ON events(published) WHERE published = 0;
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, alert_id TEXT, resident_id TEXT,
  actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_alert ON audit(alert_id);
CREATE TABLE IF NOT EXISTS outbox (
  outbox_id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL UNIQUE,
  channel TEXT NOT NULL, target TEXT NOT NULL, group_key TEXT NOT NULL, payload TEXT NOT NULL,
  created_at REAL NOT NULL, due_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, due_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS deliveries (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, outbox_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
  ts REAL NOT NULL, outcome TEXT NOT NULL, status_code INTEGER, error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS silences (
  silence_id TEXT PRIMARY KEY, doc TEXT NOT NULL, active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


AUDIT_GUARD = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""
AUDIT_GENESIS = "0" * 64


def audit_entry_hash(seq: int, ts: float, alert_id: str | None, resident_id: str | None,
                     actor: str, action: str, detail_json: str, prev_hash: str) -> str:
    """SHA-256 (hex) of one audit entry's content chained to the previous entry's hash."""
    body = orjson.dumps([seq, ts, alert_id, resident_id, actor, action, detail_json, prev_hash])
    return hashlib.sha256(body).hexdigest()


def _chain_audit(cur: sqlite3.Cursor,
                 rows: list[tuple[float, str | None, str | None, str, str, str]]) -> None:
    """Append rows to the audit chain (inside the caller's write transaction)."""
    last = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (int(last[0]), str(last[1])) if last else (0, AUDIT_GENESIS)
    out = []
    for ts_raw, aid, rid, actor, action, detail in rows:
        seq += 1
        # hashed exactly as SQLite will return it (REAL, TEXT) so verification recomputes it
        ts = float(ts_raw)
        aid, rid = (None if aid is None else str(aid)), (None if rid is None else str(rid))
        actor, action = str(actor), str(action)
        h = audit_entry_hash(seq, ts, aid, rid, actor, action, detail, prev)
        out.append((seq, ts, aid, rid, actor, action, detail, prev, h))
        prev = h
    cur.executemany("INSERT INTO audit(seq, ts, alert_id, resident_id, actor, action, detail, "
                    "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?)", out)
    cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?)",
                (orjson.dumps({"seq": seq, "hash": prev}).decode(),))


def _migrate_audit(db: sqlite3.Connection) -> None:
    """Add the hash columns to a store created before them and chain its entries."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(audit)")}
    if "hash" in cols:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
        rows = db.execute("SELECT ts, alert_id, resident_id, actor, action, detail FROM audit "
                          "ORDER BY seq").fetchall()
        db.execute("DELETE FROM audit")
        _chain_audit(db.cursor(), rows)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@dataclass
class AuditVerdict:
    """Result of `verify_audit_chain`: `first_bad` is the seq of the first bad entry."""

    ok: bool
    entries: int
    head: str
    first_bad: int | None = None
    reason: str = ""


def verify_audit_chain(path: str | Path) -> AuditVerdict:
    """Recompute the audit chain of a SQLite alert store (read-only) and name the first break.

    Detects edited, inserted, deleted or reordered entries, and a truncated tail (against
    the head recorded in `meta`). Someone able to rewrite the whole file can rebuild a
    consistent chain: record the printed head hash elsewhere to anchor it.
    """
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, ts, alert_id, resident_id, actor, action, detail, "
                          "prev_hash, hash FROM audit ORDER BY seq").fetchall()
        head_row = db.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    finally:
        db.close()
    prev, expect_seq = AUDIT_GENESIS, 1
    for seq, ts, aid, rid, actor, action, detail, prev_hash, h in rows:
        if seq != expect_seq:
            return AuditVerdict(False, len(rows), prev, int(seq),
                                f"entry {seq} follows entry {expect_seq - 1}: entries missing")
        if prev_hash != prev:
            return AuditVerdict(False, len(rows), prev, int(seq),
                                f"entry {seq} does not chain to entry {seq - 1}")
        if audit_entry_hash(seq, ts, aid, rid, actor, action, detail, prev_hash) != h:
            return AuditVerdict(False, len(rows), prev, int(seq),
                                f"entry {seq} was altered (content does not match its hash)")
        prev, expect_seq = h, expect_seq + 1
    if head_row is not None:
        head = orjson.loads(head_row[0])
        if int(head["seq"]) != len(rows) or head["hash"] != prev:
            return AuditVerdict(False, len(rows), prev, len(rows) + 1,
                                f"the log ends at entry {len(rows)} but its recorded head is "
                                f"entry {head['seq']}: entries removed from the end")
    elif rows:
        return AuditVerdict(False, len(rows), prev, 1, "no recorded head for a non-empty log")
    return AuditVerdict(True, len(rows), prev)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class SqliteAlertStore:
    """The default store: one SQLite file in WAL mode. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = private_db(Path(path))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        if synchronous not in ("FULL", "NORMAL", "OFF"):  # OFF: replay's throw-away store
            raise ValueError(f"synchronous must be FULL, NORMAL or OFF, not {synchronous!r}")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        _migrate_audit(self._db)
        self._db.executescript(AUDIT_GUARD)

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def commit(self, txn: Txn) -> list[int]:
        seqs: list[int] = []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                if txn.alerts:
                    cur.executemany(
                        "INSERT INTO alerts(alert_id, resident_id, kind, state, opened_at, doc) "
                        "VALUES (?,?,?,?,?,?) ON CONFLICT(alert_id) DO UPDATE SET "
                        "state=excluded.state, doc=excluded.doc",
                        [(a.alert_id, a.resident_id, a.kind, a.state, a.opened_at, _dumps(a))
                         for a in txn.alerts])
                if txn.events:
                    cur.executemany("INSERT INTO events(alert_id, topic, doc) VALUES (?,?,?)",
                                    [(a, t, _dumps(d)) for a, t, d in txn.events])
                    # Inside this write transaction the new seqs are the last len(events).
                    last = int(cur.execute("SELECT max(seq) FROM events").fetchone()[0])
                    seqs = list(range(last - len(txn.events) + 1, last + 1))
                if txn.audit:
                    _chain_audit(cur, [(ts, aid, rid, actor, action, _dumps(detail))
                                       for ts, aid, rid, actor, action, detail in txn.audit])
                if txn.outbox:
                    # The unique dedup key is the de-duplication stage: the same notice is
                    # queued once, however often the engine (or a restarted one) asks.
                    cur.executemany(
                        "INSERT OR IGNORE INTO outbox(dedup_key, channel, target, group_key, "
                        "payload, created_at, due_at) VALUES (?,?,?,?,?,?,?)",
                        [(o.dedup_key, o.channel, o.target, o.group_key, _dumps(o.payload),
                          o.created_at, o.due_at) for o in txn.outbox])
                if txn.silences:
                    cur.executemany(
                        "INSERT INTO silences(silence_id, doc, active) VALUES (?,?,?) "
                        "ON CONFLICT(silence_id) DO UPDATE SET doc=excluded.doc, "
                        "active=excluded.active",
                        [(s["silence_id"], _dumps(s), int(s.get("active", True)))
                         for s in txn.silences])
                if txn.meta:
                    cur.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)",
                                    [(k, _dumps(v)) for k, v in txn.meta.items()])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return seqs

    def mark_published(self, seqs: list[int]) -> None:
        if not seqs:
            return
        # One statement (one implicit transaction, one sync) per contiguous run of seqs;
        # a commit's events are contiguous, so this is usually a single range.
        runs: list[tuple[int, int]] = []
        for s in sorted(seqs):
            if runs and s == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], s)
            else:
                runs.append((s, s))
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("UPDATE events SET published = 1 WHERE seq BETWEEN ? AND ?", runs)
            cur.execute("COMMIT")

    def unpublished_events(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._q("SELECT seq, topic, doc FROM events WHERE published = 0 ORDER BY seq")
        return [(int(s), str(t), orjson.loads(d)) for s, t, d in rows]

    def open_alerts(self) -> list[Alert]:
        rows = self._q("SELECT doc FROM alerts WHERE state != 'resolved' "
                       "ORDER BY opened_at, alert_id")
        return [Alert.from_doc(orjson.loads(d)) for (d,) in rows]

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self._q("SELECT doc FROM alerts WHERE alert_id = ?", (alert_id,))
        return Alert.from_doc(orjson.loads(rows[0][0])) if rows else None

    def history(self, resident_id: str) -> list[Alert]:
        rows = self._q("SELECT doc FROM alerts WHERE resident_id = ? ORDER BY opened_at, alert_id",
                       (resident_id,))
        return [Alert.from_doc(orjson.loads(d)) for (d,) in rows]

    def events(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        if alert_id is None:
            rows = self._q("SELECT doc FROM events ORDER BY seq")
        else:
            rows = self._q("SELECT doc FROM events WHERE alert_id = ? ORDER BY seq", (alert_id,))
        return [orjson.loads(d) for (d,) in rows]

    def audit(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, alert_id, resident_id, actor, action, detail FROM audit"
        rows = (self._q(sql + " ORDER BY seq") if alert_id is None
                else self._q(sql + " WHERE alert_id = ? ORDER BY seq", (alert_id,)))
        return [{"seq": s, "ts": ts, "alert_id": a, "resident_id": r, "actor": actor,
                 "action": action, "detail": orjson.loads(detail)}
                for s, ts, a, r, actor, action, detail in rows]

    def active_silences(self) -> list[dict[str, Any]]:
        return [orjson.loads(d) for (d,) in
                self._q("SELECT doc FROM silences WHERE active = 1 ORDER BY silence_id")]

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return orjson.loads(rows[0][0]) if rows else default

    def due_outbox(self, now: float, exclude: set[int], limit: int) -> list[OutboxRow]:
        # A whole group goes when its earliest member is due (group wait), so select groups;
        # a member waiting out its own retry backoff stays behind until that is over.
        rows = self._q(
            "SELECT outbox_id, dedup_key, channel, target, group_key, payload, created_at, "
            "due_at, attempts FROM outbox WHERE status = 'pending' AND group_key IN "
            "(SELECT group_key FROM outbox WHERE status = 'pending' AND due_at <= ?) "
            "AND (attempts = 0 OR due_at <= ?) "
            "ORDER BY outbox_id LIMIT ?", (now, now, limit + len(exclude)))
        out = []
        for oid, key, ch, target, gk, payload, created, due, attempts in rows:
            if oid in exclude:
                continue
            out.append(OutboxRow(key, ch, target, gk, orjson.loads(payload), created, due,
                                 int(oid), int(attempts)))
        return out[:limit]

    def record_attempt(self, outbox_ids: list[int], ts: float, outcome: str,
                       status_code: int | None, error: str, next_at: float | None) -> None:
        """Record a delivery attempt of these rows. outcome: started | sent | retry | failed."""
        status = {"sent": "sent", "failed": "failed"}.get(outcome, "pending")
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for oid in outbox_ids:
                    if outcome == "started":
                        # Written before the send: a crash mid-send still leaves a record.
                        cur.execute("INSERT INTO deliveries(outbox_id, attempt, ts, outcome, "
                                    "status_code, error) SELECT ?, attempts + 1, ?, 'started', "
                                    "NULL, '' FROM outbox WHERE outbox_id = ?", (oid, ts, oid))
                        continue
                    cur.execute("UPDATE outbox SET attempts = attempts + 1, status = ?, "
                                "last_error = ?, due_at = COALESCE(?, due_at) WHERE outbox_id = ?",
                                (status, error, next_at, oid))
                    cur.execute("INSERT INTO deliveries(outbox_id, attempt, ts, outcome, "
                                "status_code, error) SELECT ?, attempts, ?, ?, ?, ? FROM outbox "
                                "WHERE outbox_id = ?", (oid, ts, outcome, status_code, error, oid))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def deliveries(self, outbox_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT outbox_id, attempt, ts, outcome, status_code, error FROM deliveries"
        rows = (self._q(sql + " ORDER BY seq") if outbox_id is None
                else self._q(sql + " WHERE outbox_id = ? ORDER BY seq", (outbox_id,)))
        return [{"outbox_id": o, "attempt": a, "ts": t, "outcome": oc, "status_code": sc,
                 "error": e} for o, a, t, oc, sc, e in rows]

    def outbox(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT outbox_id, dedup_key, channel, target, group_key, payload, "
                       "status, attempts, due_at FROM outbox ORDER BY outbox_id")
        return [{"outbox_id": o, "dedup_key": k, "channel": c, "target": t, "group_key": g,
                 "payload": orjson.loads(p), "status": s, "attempts": a, "due_at": d}
                for o, k, c, t, g, p, s, a, d in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
