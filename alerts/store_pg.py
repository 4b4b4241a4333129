"""The alert store on PostgreSQL: one source of truth for many engines and console instances.

Same interface and semantics as `SqliteAlertStore` (alerts/store.py): every `Txn` is one
transaction, committed before anything is published or sent. What sharing adds:

- **No lost update.** Each alert row has a version; an alert object remembers the version it
  was read at (`store_pg_base.VERSION_ATTR`). `commit` updates a row only at that version
  (`UPDATE ... WHERE version = v`; under READ COMMITTED a concurrent writer's row lock makes
  us wait, then the re-checked WHERE fails), else rolls the whole Txn back and raises
  `StaleAlertError` (an `AlertTransitionError`). The engine then reloads and retries, so of
  two simultaneous acks exactly one is stored and the other gets "already acknowledged".
- **One sender per notice.** `due_outbox` claims rows (`FOR UPDATE SKIP LOCKED`, a lease
  naming this instance); rows claimed by an instance that died are taken over when the
  lease runs out, so a notice is neither lost nor sent twice by live instances.
- **Following the others.** Each alert row records the transaction that last wrote it
  (`changed_xid`); `alert_changes` returns what was written since a cursor, which every
  engine reads on each tick to refresh its open alerts (alerts/pg_refresh.py).
- **Append-only audit.** Triggers refuse UPDATE, DELETE and TRUNCATE on `audit` and
  `deliveries`, and any change to `events` except marking them published.

One connection guarded by a lock (like the SQLite store); a broken connection is replaced
on the next call. Multi-statement work uses explicit transactions.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import orjson
import psycopg

from alerts.model import Alert
from alerts.store import AUDIT_GENESIS, AuditVerdict, OutboxRow, Txn, audit_entry_hash
from alerts.store_pg_base import (
    AUDIT_LOCK_KEY,
    CURRENT_XID,
    SCHEMA,
    SNAPSHOT_XMIN,
    StaleAlertError,
    set_version,
    version_of,
)
from alerts.store_pg_conn import PgConnection, dsn_from_settings
from config.models import PostgresSettings


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def open_pg_store(settings: PostgresSettings, instance: str | None = None) -> PgAlertStore:
    """The PostgreSQL store described by `storage.postgresql`."""
    return PgAlertStore(dsn_from_settings(settings), instance=instance,
                        claim_lease_s=settings.claim_lease_s)


class PgAlertStore(PgConnection):
    """`AlertStore` on PostgreSQL, safe to share between processes and machines."""

    def __init__(self, dsn: str, *, instance: str | None = None,
                 claim_lease_s: float = 60.0) -> None:
        super().__init__(dsn)
        # Names this process in outbox claims and delivery rows (which machine sent what).
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.claim_lease_s = claim_lease_s
        self._create_schema(SCHEMA)

    # ---- writes ------------------------------------------------------------------------
    def commit(self, txn: Txn) -> list[int]:
        # The same alert may be recorded several times in one step (open, then escalate):
        # its last state is what is stored, at one version bump.
        alerts = list({a.alert_id: a for a in txn.alerts}.values())
        seqs: list[int] = []
        with self._lock, self._txn() as cur:
            stale = self._write_alerts(cur, alerts)
            versions = [(version_of(a) or 0) + 1 for a in alerts]
            if stale:
                # Raised inside the transaction block: psycopg rolls everything back.
                raise StaleAlertError(
                    f"alert {', '.join(stale)} was changed by another instance; "
                    "reload it and try again", stale)
            if txn.events:
                cur.executemany(
                    "INSERT INTO events(alert_id, topic, doc) VALUES (%s,%s,%s::json) "
                    "RETURNING seq", [(a, t, _dumps(d)) for a, t, d in txn.events],
                    returning=True)
                while True:
                    row = cur.fetchone()
                    assert row is not None
                    seqs.append(int(row[0]))
                    if not cur.nextset():
                        break
            if txn.audit:
                self._chain_audit(cur, txn.audit)
            if txn.outbox:
                # The unique dedup key is the de-duplication stage, across instances too.
                cur.executemany(
                    "INSERT INTO outbox(dedup_key, channel, target, group_key, payload, "
                    "created_at, due_at) VALUES (%s,%s,%s,%s,%s::json,%s,%s) "
                    "ON CONFLICT (dedup_key) DO NOTHING",
                    [(o.dedup_key, o.channel, o.target, o.group_key, _dumps(o.payload),
                      o.created_at, o.due_at) for o in txn.outbox])
            self._write_silences(cur, txn.silences)
            if txn.meta:
                cur.executemany(
                    "INSERT INTO meta(key, value) VALUES (%s, %s::json) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [(k, _dumps(v)) for k, v in txn.meta.items()])
        for a, v in zip(alerts, versions, strict=True):  # only once the commit succeeded
            set_version(a, v)
        return seqs

    @staticmethod
    def _write_alerts(cur: psycopg.Cursor[tuple[Any, ...]], alerts: list[Alert]) -> list[str]:
        """Insert new alerts and update known ones, each kind in one statement (a storm of
        a thousand alerts is two round trips, not a thousand); the ids that were stale: a
        new one already stored, or a known one changed since this copy was read."""
        fresh = [a for a in alerts if version_of(a) is None]
        known = [a for a in alerts if version_of(a) is not None]
        written: set[str] = set()
        if fresh:
            cur.execute(
                "INSERT INTO alerts(alert_id, resident_id, kind, state, opened_at, doc) "
                "SELECT i, r, k, s, o, d::json FROM unnest(%s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::float8[], %s::text[]) AS v(i, r, k, s, o, d) "
                "ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id",
                ([a.alert_id for a in fresh], [a.resident_id for a in fresh],
                 [a.kind for a in fresh], [a.state for a in fresh],
                 [a.opened_at for a in fresh], [_dumps(a.to_doc()) for a in fresh]))
            written.update(str(r[0]) for r in cur.fetchall())
        if known:
            cur.execute(
                "UPDATE alerts SET state = v.s, doc = v.d::json, version = alerts.version + 1, "
                f"changed_xid = {CURRENT_XID} "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) AS v(i, s, d, seen) "
                "WHERE alerts.alert_id = v.i AND alerts.version = v.seen RETURNING alerts.alert_id",
                ([a.alert_id for a in known], [a.state for a in known],
                 [_dumps(a.to_doc()) for a in known], [version_of(a) for a in known]))
            written.update(str(r[0]) for r in cur.fetchall())
        return [a.alert_id for a in alerts if a.alert_id not in written]

    @staticmethod
    def _chain_audit(cur: psycopg.Cursor[tuple[Any, ...]],
                     entries: list[tuple[float, str | None, str | None, str, str,
                                         dict[str, Any]]]) -> None:
        """Append to the audit hash chain, hashed exactly as the SQLite store does (same
        `audit_entry_hash`), so one verifier logic serves both. Appends from all instances
        are serialised by an advisory lock held to the commit; JSON (not JSONB) columns give
        the detail text back byte for byte."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
        last = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (int(last[0]), str(last[1])) if last else (0, AUDIT_GENESIS)
        out = []
        for ts, aid, rid, actor, action, detail in entries:
            seq += 1
            text = _dumps(detail)
            aid, rid = (None if aid is None else str(aid)), (None if rid is None else str(rid))
            h = audit_entry_hash(seq, float(ts), aid, rid, str(actor), str(action), text, prev)
            out.append((seq, float(ts), aid, rid, str(actor), str(action), text, prev, h))
            prev = h
        cur.executemany("INSERT INTO audit(seq, ts, alert_id, resident_id, actor, action, "
                        "detail, prev_hash, hash) VALUES (%s,%s,%s,%s,%s,%s,%s::json,%s,%s)", out)
        cur.execute("INSERT INTO meta(key, value) VALUES ('audit_head', %s::json) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_dumps({"seq": seq, "hash": prev}),))

    def verify_audit(self) -> AuditVerdict:
        """Recompute the audit chain and name the first entry that does not fit (as
        `alerts.store.verify_audit_chain` does for a SQLite file)."""
        rows = self._q("SELECT seq, ts, alert_id, resident_id, actor, action, detail::text, "
                       "prev_hash, hash FROM audit ORDER BY seq")
        head = self.meta("audit_head")
        prev, expect = AUDIT_GENESIS, 1
        for seq, ts, aid, rid, actor, action, detail, prev_hash, h in rows:
            bad = ("entries missing before it" if seq != expect else
                   "it does not chain to the previous entry" if prev_hash != prev else
                   "it was altered" if audit_entry_hash(seq, ts, aid, rid, actor, action,
                                                        detail, prev_hash) != h else "")
            if bad:
                return AuditVerdict(False, len(rows), prev, int(seq), f"entry {seq}: {bad}")
            prev, expect = h, expect + 1
        if rows and (head is None or int(head["seq"]) != len(rows) or head["hash"] != prev):
            return AuditVerdict(False, len(rows), prev, len(rows) + 1,
                                "the log does not end at its recorded head: entries removed")
        return AuditVerdict(True, len(rows), prev)

    @staticmethod
    def _write_silences(cur: psycopg.Cursor[tuple[Any, ...]],
                        silences: list[dict[str, Any]]) -> None:
        for s in silences:
            # Silence ids come from each engine's counter; two instances can pick the same
            # one. Updating is allowed only for the same silence (creator and creation
            # time); anything else is refused rather than overwriting someone's silence.
            cur.execute(
                "INSERT INTO silences(silence_id, doc, active) VALUES (%s, %s::json, %s) "
                "ON CONFLICT (silence_id) DO UPDATE SET doc = excluded.doc, "
                "active = excluded.active WHERE silences.doc->>'by' = excluded.doc->>'by' "
                "AND silences.doc->>'created_at' = excluded.doc->>'created_at'",
                (s["silence_id"], _dumps(s), bool(s.get("active", True))))
            if cur.rowcount != 1:
                raise StaleAlertError(
                    f"silence id {s['silence_id']} is taken by another instance's silence", [])

    def mark_published(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock, self._txn() as cur:
            cur.execute("UPDATE events SET published = TRUE WHERE seq = ANY(%s) AND NOT published",
                        (list(seqs),))

    def record_attempt(self, outbox_ids: list[int], ts: float, outcome: str,
                       status_code: int | None, error: str, next_at: float | None) -> None:
        """Record a delivery attempt of these rows. outcome: started | sent | retry | failed."""
        status = {"sent": "sent", "failed": "failed"}.get(outcome, "pending")
        with self._lock, self._txn() as cur:
            for oid in outbox_ids:
                if outcome == "started":
                    # Written before the send: a crash mid-send still leaves a record.
                    cur.execute("INSERT INTO deliveries(outbox_id, attempt, ts, outcome, "
                                "status_code, error, sender) SELECT %s, attempts + 1, %s, "
                                "'started', NULL, '', %s FROM outbox WHERE outbox_id = %s",
                                (oid, ts, self.instance, oid))
                    continue
                # The attempt is over: release the claim (a retry is due later, to anyone).
                cur.execute("UPDATE outbox SET attempts = attempts + 1, status = %s, "
                            "last_error = %s, due_at = COALESCE(%s, due_at), claimed_by = NULL, "
                            "claimed_until = NULL WHERE outbox_id = %s",
                            (status, error, next_at, oid))
                cur.execute("INSERT INTO deliveries(outbox_id, attempt, ts, outcome, "
                            "status_code, error, sender) SELECT %s, attempts, %s, %s, %s, %s, "
                            "%s FROM outbox WHERE outbox_id = %s",
                            (oid, ts, outcome, status_code, error, self.instance, oid))

    # ---- outbox claims -----------------------------------------------------------------
    def due_outbox(self, now: float, exclude: set[int], limit: int) -> list[OutboxRow]:
        """Claim and return due notices (whole groups when their earliest member is due).

        Rows claimed by another live instance are skipped; this instance's own claims come
        back (minus `exclude`, its in-flight rows) so a batch its queue refused is retried.
        """
        with self._lock, self._txn() as cur:
            rows = cur.execute(
                "WITH due AS (SELECT outbox_id FROM outbox WHERE status = 'pending' "
                "AND group_key IN (SELECT group_key FROM outbox WHERE status = 'pending' "
                "AND due_at <= %(now)s) AND (attempts = 0 OR due_at <= %(now)s) "
                "AND NOT (outbox_id = ANY(%(exclude)s)) "
                "AND (claimed_by IS NULL OR claimed_by = %(me)s OR claimed_until < %(now)s) "
                "ORDER BY outbox_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "UPDATE outbox o SET claimed_by = %(me)s, "
                "claimed_until = %(now)s + %(lease)s FROM due WHERE o.outbox_id = due.outbox_id "
                "RETURNING o.outbox_id, o.dedup_key, o.channel, o.target, o.group_key, "
                "o.payload::text, o.created_at, o.due_at, o.attempts",
                {"now": now, "exclude": sorted(exclude), "me": self.instance,
                 "limit": limit, "lease": self.claim_lease_s}).fetchall()
        rows.sort(key=lambda r: int(r[0]))
        return [OutboxRow(key, ch, target, gk, orjson.loads(payload), created, due, int(oid),
                          int(attempts))
                for oid, key, ch, target, gk, payload, created, due, attempts in rows]

    # ---- reads -------------------------------------------------------------------------
    @staticmethod
    def _alert(doc: str, version: int) -> Alert:
        alert = Alert.from_doc(orjson.loads(doc))
        set_version(alert, int(version))
        return alert

    def unpublished_events(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._q("SELECT seq, topic, doc::text FROM events WHERE NOT published ORDER BY seq")
        return [(int(s), str(t), orjson.loads(d)) for s, t, d in rows]

    def open_alerts(self) -> list[Alert]:
        rows = self._q("SELECT doc::text, version FROM alerts WHERE state <> 'resolved' "
                       "ORDER BY opened_at, alert_id")
        return [self._alert(d, v) for d, v in rows]

    def alert_changes(self, cursor: int | None) -> tuple[list[tuple[str, str, str, int]], int]:
        """(alert_id, resident_id, state, version) of the alerts written since `cursor` (a
        few earlier ones too; None: none, just start following), and the next cursor.

        The cursor is the xmin of the read's own snapshot (the oldest transaction still
        running): a write not visible to this read has an id at or above it, so the next
        call (`changed_xid >= cursor`) sees it whatever order concurrent commits land in."""
        rows = self._q(f"SELECT {SNAPSHOT_XMIN}, "
                       "a.alert_id, a.resident_id, a.state, a.version FROM (SELECT 1) one "
                       "LEFT JOIN alerts a ON a.changed_xid >= %s",
                       (cursor if cursor is not None else 2**63 - 1,))
        return ([(str(a), str(r), str(s), int(v)) for _x, a, r, s, v in rows if a is not None],
                int(rows[0][0]))

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self._q("SELECT doc::text, version FROM alerts WHERE alert_id = %s", (alert_id,))
        return self._alert(*rows[0]) if rows else None

    def history(self, resident_id: str) -> list[Alert]:
        rows = self._q("SELECT doc::text, version FROM alerts WHERE resident_id = %s "
                       "ORDER BY opened_at, alert_id", (resident_id,))
        return [self._alert(d, v) for d, v in rows]

    def events(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        if alert_id is None:
            rows = self._q("SELECT doc::text FROM events ORDER BY seq")
        else:
            rows = self._q("SELECT doc::text FROM events WHERE alert_id = %s ORDER BY seq",
                           (alert_id,))
        return [orjson.loads(d) for (d,) in rows]

    def audit(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, alert_id, resident_id, actor, action, detail::text FROM audit"
        rows = (self._q(sql + " ORDER BY seq") if alert_id is None
                else self._q(sql + " WHERE alert_id = %s ORDER BY seq", (alert_id,)))
        return [{"seq": s, "ts": ts, "alert_id": a, "resident_id": r, "actor": actor,
                 "action": action, "detail": orjson.loads(detail)}
                for s, ts, a, r, actor, action, detail in rows]

    def active_silences(self) -> list[dict[str, Any]]:
        return [orjson.loads(d) for (d,) in
                self._q("SELECT doc::text FROM silences WHERE active ORDER BY silence_id")]

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._q("SELECT value::text FROM meta WHERE key = %s", (key,))
        return orjson.loads(rows[0][0]) if rows else default

    def deliveries(self, outbox_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT outbox_id, attempt, ts, outcome, status_code, error FROM deliveries"
        rows = (self._q(sql + " ORDER BY seq") if outbox_id is None
                else self._q(sql + " WHERE outbox_id = %s ORDER BY seq", (outbox_id,)))
        return [{"outbox_id": o, "attempt": a, "ts": t, "outcome": oc, "status_code": sc,
                 "error": e} for o, a, t, oc, sc, e in rows]

    def outbox(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT outbox_id, dedup_key, channel, target, group_key, payload::text, "
                       "status, attempts, due_at FROM outbox ORDER BY outbox_id")
        return [{"outbox_id": o, "dedup_key": k, "channel": c, "target": t, "group_key": g,
                 "payload": orjson.loads(p), "status": s, "attempts": a, "due_at": d}
                for o, k, c, t, g, p, s, a, d in rows]
