"""What the PostgreSQL alert store shares with the engine, free of any driver import.

`StaleAlertError` is how a shared store refuses a change made from an out-of-date copy
(another engine or console instance changed the alert first); the engine reloads the
stored alert and retries, so the loser of two simultaneous acks gets the ordinary
"alert is already acknowledged". `SCHEMA` is the PostgreSQL layout, the SQLite one plus a
per-alert version (optimistic concurrency), the id of the transaction that last wrote each
alert (`changed_xid`: how engines follow each other, alerts/pg_refresh.py) and a claim on
outbox rows (one sender each).
"""

from __future__ import annotations

from typing import Any

from alerts.model import AlertTransitionError

# Attribute stored on each Alert (or Task) object a PostgreSQL store returns or commits: the row
# version that object was read at. Kept out of the dataclass fields (asdict, orjson and the
# contract never see it); a deep copy carries it, which is what optimistic locking wants.
VERSION_ATTR = "_store_version"


class StaleAlertError(AlertTransitionError):
    """The alert changed in the shared store since this copy was read; nothing was written."""

    def __init__(self, message: str, alert_ids: list[str]) -> None:
        super().__init__(message)
        self.alert_ids = alert_ids


def version_of(record: object) -> int | None:
    """The store version this object (an alert, a routine task) was read at (None: never
    stored by a shared store)."""
    value: Any = record.__dict__.get(VERSION_ATTR)
    return int(value) if value is not None else None


def set_version(record: object, version: int) -> None:
    record.__dict__[VERSION_ATTR] = version


# One advisory lock key serialises schema creation by instances starting together.
SCHEMA_LOCK_KEY = 0x63617265  # "care"
# Serialises appends to the audit hash chain across instances (held to the commit).
AUDIT_LOCK_KEY = 0x61756474  # "audt"

# The trigger function behind every append-only table (alert audit, deliveries, task log).
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION carewatch_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'carewatch: table % is append-only', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""

# Change tracking shared by the alert and routine-task tables: each row records the id of the
# transaction that last wrote it; a reader keeps the xmin of its last snapshot as a cursor.
CURRENT_XID = "pg_current_xact_id()::text::bigint"
SNAPSHOT_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def changed_xid_sql(table: str) -> str:
    """The `changed_xid` column added to a `table` created before it existed, and its index
    (the column itself is in the table's CREATE TABLE)."""
    return f"""
DO $$ BEGIN  -- a store created before changed_xid existed
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{table}'::regclass
                 AND attname = 'changed_xid' AND NOT attisdropped) THEN
    ALTER TABLE {table} ADD COLUMN changed_xid BIGINT NOT NULL DEFAULT ({CURRENT_XID});
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS {table}_changed ON {table}(changed_xid);
"""


SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  alert_id TEXT PRIMARY KEY, resident_id TEXT NOT NULL, kind TEXT NOT NULL,
  state TEXT NOT NULL, opened_at DOUBLE PRECISION NOT NULL, doc JSON NOT NULL,
  version BIGINT NOT NULL DEFAULT 1,
  changed_xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint));
""" + changed_xid_sql("alerts") + """
CREATE INDEX IF NOT EXISTS alerts_resident ON alerts(resident_id, opened_at);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(opened_at, alert_id) WHERE state <> 'resolved';
CREATE TABLE IF NOT EXISTS events (
  seq BIGSERIAL PRIMARY KEY, alert_id TEXT NOT NULL, topic TEXT NOT NULL, doc JSON NOT NULL,
  published BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX IF NOT EXISTS events_alert ON events(alert_id);
CREATE INDEX IF NOT EXISTS events_unpublished ON events(seq) WHERE NOT published;
CREATE TABLE IF NOT EXISTS audit (
  seq BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, alert_id TEXT, resident_id TEXT,
  actor TEXT NOT NULL, action TEXT NOT NULL, detail JSON NOT NULL,
  prev_hash TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_alert ON audit(alert_id);
CREATE TABLE IF NOT EXISTS outbox (
  outbox_id BIGSERIAL PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
  target TEXT NOT NULL, group_key TEXT NOT NULL, payload JSON NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, due_at DOUBLE PRECISION NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '', claimed_by TEXT, claimed_until DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(due_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS deliveries (
  seq BIGSERIAL PRIMARY KEY, outbox_id BIGINT NOT NULL, attempt INTEGER NOT NULL,
  ts DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL, status_code INTEGER,
  error TEXT NOT NULL, sender TEXT);
CREATE INDEX IF NOT EXISTS deliveries_outbox ON deliveries(outbox_id);
CREATE TABLE IF NOT EXISTS silences (
  silence_id TEXT PRIMARY KEY, doc JSON NOT NULL, active BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value JSON NOT NULL);

-- The audit log and the delivery record are append-only for everyone, the application
-- included: a row once written is evidence. Events may only flip `published`.
""" + APPEND_ONLY_FUNCTION + """
CREATE OR REPLACE FUNCTION carewatch_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' OR NEW.seq <> OLD.seq OR NEW.alert_id <> OLD.alert_id
     OR NEW.topic <> OLD.topic OR NEW.doc::text <> OLD.doc::text THEN
    RAISE EXCEPTION 'carewatch: events are append-only (only published may change)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION carewatch_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION carewatch_append_only();
CREATE OR REPLACE TRIGGER deliveries_append_only BEFORE UPDATE OR DELETE ON deliveries
  FOR EACH ROW EXECUTE FUNCTION carewatch_append_only();
CREATE OR REPLACE TRIGGER events_guard BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION carewatch_events_guard();
CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION carewatch_append_only();
"""
